"""round_to: auto on the real runtimes: widths snapped to plateau edges measured here, or rounded to the
device's channel multiple when a target cannot be measured. Which widths win depends on the CPU, so the
tests check what holds on any: never fewer channels than asked, exactly the planned widths, the measured
staircases recorded."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")
pytest.importorskip("ai_edge_litert")

from edgecompress.console import UI  # noqa: E402
from edgecompress.context import RunContext  # noqa: E402
from edgecompress.data import load_data  # noqa: E402
from edgecompress.frameworks.torch import TorchAdapter  # noqa: E402
from edgecompress.recipe import parse_recipe  # noqa: E402
from edgecompress.specs import load_device  # noqa: E402
from edgecompress.stages.prune.stage import PruneConfig  # noqa: E402
from edgecompress.stages.prune.torch_backend import prune  # noqa: E402
from tests.conftest import EXAMPLES  # noqa: E402

pytestmark = pytest.mark.integration


def _ctx(tmp_path, exports: str, devices: str = "[desktop]") -> RunContext:
    text = (
        f"name: t\nmodel: {{source: '{EXAMPLES}:tiny_mobile_v3', input_shape: [1, 1, 16, 16]}}\n"
        f"data: {{image_size: [16, 16]}}\nexport: {exports}\ndevices: {devices}\n"
    )
    recipe = parse_recipe(text, base_dir=tmp_path)
    return RunContext(
        recipe=recipe,
        recipe_path=tmp_path / "recipe.yaml",
        workdir=tmp_path,
        adapter=TorchAdapter(),
        data=load_data(recipe.data, tmp_path / "recipe.yaml", seed=0),
        ui=UI(verbosity=0),
    )


def _out_channels(model) -> dict[str, int]:
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}


def test_widths_snap_up_to_measured_plateau_edges(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECOMPRESS_CACHE", str(tmp_path / "cache"))
    ctx = _ctx(tmp_path, "[{format: tflite, precision: fp32}, {format: openvino, precision: int8}]")
    ctx.current_stage = 0
    torch.manual_seed(0)
    model = ctx.adapter.load(ctx.recipe.model, ctx.recipe_path)
    wanted = _out_channels(
        prune(ctx.adapter.load(ctx.recipe.model, ctx.recipe_path), PruneConfig(ratio=0.5), ctx)
    )
    ctx.notes.clear()
    pruned = prune(model, PruneConfig(ratio=0.5, round_to="auto"), ctx)
    notes = ctx.notes[0]
    assert notes["round_to"] == "auto"
    assert notes["width_plan_targets"] == ["desktop/litert-fp32", "desktop/openvino-int8"]
    after = _out_channels(pruned)
    for root, (original, asked, kept) in notes["widths"].items():
        assert asked == wanted[root] and asked <= kept <= original, root
        assert after[root] == kept
        staircase = notes["staircases"][root]
        assert set(staircase) <= {"desktop/litert-fp32", "desktop/openvino-int8"}
        for costs in staircase.values():
            assert str(asked) in {str(c) for c in costs} and all(t >= 0 for t in costs.values())
    ctx.adapter.check(pruned, ctx.input_shape, 10)


def test_an_unmeasurable_target_rounds_up_to_the_device_multiple(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECOMPRESS_CACHE", str(tmp_path / "cache"))
    devices = tmp_path / "devices"
    devices.mkdir()
    (devices / "board.yaml").write_text(
        "description: a board profile without LiteRT\ncpu: {model: detect, arch: detect, cores: detect}\n"
        "memory_mb: detect\nruntimes: [openvino]\nchannel_multiples: {litert: {fp32: 8}}\n"
    )
    ctx = _ctx(tmp_path, "[{format: tflite, precision: fp32}]", devices="[board]")
    ctx.current_stage = 0
    pruned = prune(
        ctx.adapter.load(ctx.recipe.model, ctx.recipe_path), PruneConfig(ratio=0.5, round_to="auto"), ctx
    )
    notes = ctx.notes[0]
    assert notes["width_plan_fallback"] and "channel multiple 8" in notes["width_plan_fallback"][0]
    for root, (original, asked, kept) in notes["widths"].items():
        assert kept >= asked and (kept % 8 == 0 or kept == original), root
    assert load_device("board", base_dir=tmp_path).channel_multiple("litert", "fp32") == 8
    ctx.adapter.check(pruned, ctx.input_shape, 10)
