"""The behaviour of stages and exports, written once and run for every framework (a template test with a
subclass per framework, as NNCF does): loading, training, distillation, copies, pattern sparsity held
through training, channel pruning, int8 quantization, the exports on their runtimes (loaded outside
edgecompress) and stage checkpoints. Tiny models on 16x16 digits, so each framework's run stays short.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from edgecompress.console import UI
from edgecompress.exporters.parity import compare_logits, run_artifact
from edgecompress.frameworks.base import FitOptions
from edgecompress.pipeline import load_context
from edgecompress.recipe import parse_recipe
from edgecompress.registry import EXPORTERS, STAGES
from edgecompress.stages.base import run_stage
from tests.conftest import needs_keras

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _recipe(model: str, layout: str, stages: str, export: str, size: int = 16) -> str:
    return f"""\
name: template
seed: 0
model: {model}
data: {{dataset: digits, image_size: [{size}, {size}], channels: 1, layout: {layout}, batch_size: 64}}
stages: {stages}
export: {export}
devices: [desktop]
"""


class FrameworkContract:
    """One framework's run of the contract; subclasses name the model and its layout."""

    framework: ClassVar[str]
    model: ClassVar[str]  # the recipe's model section (flow YAML)
    layout: ClassVar[str]
    #: A model big enough to be timed (the quickstart, 8.8 M MACs on 32x32): the tiny one is all per-op
    #: overhead, which no pruning removes.
    timed_model: ClassVar[str]

    @pytest.fixture(scope="class")
    def trained(self, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
        """(ctx, model): the tiny model trained 6 epochs; tests take copies."""
        root = tmp_path_factory.mktemp(self.framework)
        ctx, model = self.context(root, stages="[]", export="[{format: tflite, precision: fp32}]")
        model = ctx.adapter.fit(model, ctx.data, FitOptions(epochs=6, lr=5e-3), seed=0, ui=ctx.ui)
        return ctx, model

    def context(self, root: Path, *, stages: str, export: str, timed: bool = False) -> tuple[Any, Any]:
        path = root / "recipe.yaml"
        model, size = (self.timed_model, 32) if timed else (self.model, 16)
        path.write_text(_recipe(model, self.layout, stages, export, size))
        recipe = parse_recipe(path.read_text(), source=str(path), base_dir=root)
        ctx, model = load_context(recipe, path, workdir=root / "work", ui=UI(verbosity=0))
        assert ctx.framework == self.framework
        return ctx, model

    def stage_ctx(
        self, trained: tuple[Any, Any], tmp_path: Path, stages: str, export: str
    ) -> tuple[Any, Any]:
        """A fresh context with `stages`/`export` and a copy of the trained model."""
        ctx, _ = self.context(tmp_path, stages=stages, export=export)
        return ctx, ctx.adapter.copy(trained[1])

    def ptq_planner(self, trained: tuple[Any, Any], tmp_path: Path, export: str) -> tuple[Any, Any]:
        """(ctx, planner): the trained model quantized by PTQ, and the precision planner of `export` on it
        (the caller closes it)."""
        from edgecompress.precision import Planner
        from edgecompress.specs import load_device

        ctx, model = self.stage_ctx(trained, tmp_path, "[{type: quantize, mode: ptq}]", export)
        quantized = run_stage(ctx.recipe.stages[0], 0, model, ctx)
        devices = [load_device("desktop")]
        return ctx, Planner(ctx, quantized=quantized, float_model=model, devices=devices, ui=ctx.ui)

    @staticmethod
    def exported_int8(model: Any, ctx: Any, out: Path, *, float_weights: int | None = None) -> dict[str, Any]:
        """Each of the recipe's int8 exports of `model`, run on its runtime: spec name -> (artifact, logits),
        every one agreeing with `model` on >= 97% of the test images. `float_weights`: the number of float32
        weight tensors the .tflite must hold (the others int8)."""
        from edgecompress.exporters.tflite_int8 import weight_dtypes

        reference = ctx.adapter.predict(model, ctx.data.test.x)
        runs = {}
        for spec in ctx.recipe.export:
            artifact = EXPORTERS.get(spec.format)().export(model, spec, ctx, out)
            if float_weights is not None and spec.format == "tflite":
                dtypes = weight_dtypes(artifact.path.read_bytes())
                assert dtypes.get("FLOAT32", 0) == float_weights and dtypes.get("INT8", 0) >= 3, dtypes
            logits = run_artifact(artifact, ctx.data.test.x, num_outputs=10, threads=1, ui=ctx.ui).logits
            parity = compare_logits(logits, reference, ctx.data.test.y, execution_precision="int8")
            assert parity.agreement >= 0.97, (spec.artifact_name, parity)
            runs[spec.artifact_name] = (artifact, logits)
        return runs

    # ------------------------------------------------------------------------------------------ behaviours

    def test_loads_measures_and_trains(self, trained):
        ctx, model = trained
        stats = ctx.adapter.stats(model, ctx.input_shape)
        assert stats.params > 0 and stats.macs > 0
        layers = ctx.adapter.layers(model, ctx.input_shape)
        assert any(layer.prunable for layer in layers) and any(not layer.prunable for layer in layers)
        assert ctx.adapter.accuracy(model, ctx.data.test) > 0.5  # 10 classes: chance is 0.1
        assert ctx.adapter.trained_images >= 6 * (len(ctx.data.train) - 64)

    def test_copy_is_independent(self, trained, tmp_path):
        ctx, model = trained
        copy = ctx.adapter.copy(model)
        x = ctx.data.test.x[:8]
        before = ctx.adapter.predict(model, x)
        np.testing.assert_array_equal(ctx.adapter.predict(copy, x), before)
        ctx.adapter.fit(copy, ctx.data, FitOptions(epochs=1, lr=1e-2, keep_best=False), seed=1, ui=ctx.ui)
        np.testing.assert_array_equal(ctx.adapter.predict(model, x), before)
        assert not np.array_equal(ctx.adapter.predict(copy, x), before)

    def test_distillation_pulls_the_student_to_the_teacher(self, trained, tmp_path):
        ctx, teacher = trained
        student = self.context(tmp_path, stages="[]", export="[]")[1]  # untrained
        options = FitOptions(epochs=4, lr=5e-3, teacher=teacher, temperature=4.0, alpha=1.0)
        student = ctx.adapter.fit(student, ctx.data, options, seed=0, ui=ctx.ui)
        agree = (
            ctx.adapter.predict(student, ctx.data.test.x).argmax(1)
            == ctx.adapter.predict(teacher, ctx.data.test.x).argmax(1)
        ).mean()
        assert agree > 0.5  # with alpha 1 only the teacher's soft targets taught it

    def test_two_four_sparsity_is_held_through_training(self, trained, tmp_path):
        ctx, model = self.stage_ctx(
            trained, tmp_path, "[{type: prune, method: nm, n: 2, m: 4}, {type: distill, epochs: 2}]", "[]"
        )
        for i, config in enumerate(ctx.recipe.stages):
            model = run_stage(config, i, model, ctx)
        plan = ctx.notes[0]["sparsity_plan"]
        assert plan["layers"], "2:4 applies to some layer"
        weights = ctx.adapter.weights(model)
        for name in plan["layers"]:
            w = weights[name]  # canonical [out, in, kh, kw]: groups of 4 along the inputs
            groups = np.moveaxis(w, 1, -1).reshape(-1, w.shape[1] // 4, 4)
            assert ((groups != 0).sum(-1) <= 2).all(), name
        assert ctx.adapter.accuracy(model, ctx.data.test) > 0.5

    def test_channel_pruning_removes_channels(self, trained, tmp_path):
        ctx, model = self.stage_ctx(
            trained, tmp_path, "[{type: prune, method: channel, ratio: 0.5, round_to: 2}]", "[]"
        )
        before = ctx.adapter.stats(model, ctx.input_shape)
        pruned = run_stage(ctx.recipe.stages[0], 0, model, ctx)
        after = ctx.adapter.stats(pruned, ctx.input_shape)
        assert after.macs <= 0.5 * before.macs and after.params < before.params
        ctx.adapter.check(pruned, ctx.input_shape, ctx.data.num_classes)

    def test_latency_layers_are_the_computing_ops(self, trained):
        ctx, model = trained
        ops = ctx.adapter.latency_layers(model, ctx.input_shape)
        convs = [op for op in ops if op.kind in ("conv", "linear")]
        layers = [layer for layer in ctx.adapter.layers(model, ctx.input_shape) if layer.macs > 0]
        assert len(convs) == len(layers)  # one conv / linear op per conv / dense layer
        assert {op.op for op in ops} >= {"conv2d", "linear", "add", "mean"}
        for op in ops:
            graph = op.graph("int8")
            assert graph.input_shape[0] == 1 and graph.nodes[0].precision == "int8"
        fused = [dict(op.attrs).get("activation") for op in convs]
        assert "relu" in fused  # a ReLU after a conv (through its BatchNorm) runs fused into it

    def test_round_to_auto_snaps_to_measured_plateaus(self, trained, tmp_path, monkeypatch):
        monkeypatch.setenv("EDGECOMPRESS_CACHE", str(tmp_path / "cache"))
        export = "[{format: tflite, precision: fp32}, {format: openvino, precision: int8}]"
        stages = "[{type: prune, method: channel, ratio: 0.5, round_to: auto}]"
        ctx, model = self.stage_ctx(trained, tmp_path, stages, export)
        channels = {layer.name: layer.out_channels for layer in ctx.adapter.layers(model, ctx.input_shape)}
        pruned = run_stage(ctx.recipe.stages[0], 0, model, ctx)
        notes = ctx.notes[0]
        assert notes["round_to"] == "auto"
        assert notes["width_plan_targets"] == ["desktop/litert-fp32", "desktop/openvino-int8"]
        after = {layer.name: layer.out_channels for layer in ctx.adapter.layers(pruned, ctx.input_shape)}
        # a tiny model's latency can be flat up to its full width: then every group snaps back to it and
        # `widths` (the groups that changed) is empty; the staircases are measured either way
        assert notes["staircases"]
        for root, staircase in notes["staircases"].items():
            assert set(staircase) <= {"desktop/litert-fp32", "desktop/openvino-int8"}, root
            asked = min(
                int(c) for costs in staircase.values() for c in costs
            )  # a sweep starts at the asked width
            assert all(t >= 0 for costs in staircase.values() for t in costs.values()), root
            assert asked <= after[root] <= channels[root], root
            if root in notes["widths"]:
                assert notes["widths"][root] == [channels[root], asked, after[root]], root
            else:
                assert after[root] == channels[root], root
        ctx.adapter.check(pruned, ctx.input_shape, ctx.data.num_classes)

    def test_latency_budget_is_solved_and_measured(self, trained, tmp_path, monkeypatch):
        from edgecompress.stages.prune.latency_budget import AIM

        monkeypatch.setenv("EDGECOMPRESS_CACHE", str(tmp_path / "cache"))
        stages = "[{type: prune, latency: {export: tflite-fp32, speedup: 1.5}, iterative_steps: 1}]"
        ctx, model = self.context(
            tmp_path, stages=stages, export="[{format: tflite, precision: fp32}]", timed=True
        )
        before = ctx.adapter.stats(model, ctx.input_shape)
        runner = STAGES.get("prune")(ctx.recipe.stages[0])
        ctx.current_stage = 0
        runner.precheck(model, ctx, 0)
        pruned = runner.apply(model, ctx)
        notes = ctx.notes[0]
        (budget,) = notes["latency_budgets"]
        assert budget["target"] == "desktop/tflite-fp32" and budget["budget"] == "1.5x"
        # the notes round to 4 decimals of a ms: 0.0666 for 0.06653 on a 0.1 ms model
        assert budget["target_ms"] == pytest.approx(budget["reference_ms"] / 1.5, rel=1e-3, abs=1e-4)
        assert budget["measured_ms"] > 0 and budget["measured_speedup"] > 1.0
        corrections = notes.get("budget_corrections", [])
        if not corrections:  # the solve aims AIM under the budget (its tolerance 1%)
            assert budget["predicted_ms"] <= budget["target_ms"] * AIM * 1.01
        for message in corrections:  # a correction aims by the miss
            assert message.startswith("measured "), message
            assert "redoing the last step aiming" in message or message.endswith(
                "no other widths near it, kept"
            )
        assert ctx.adapter.stats(pruned, ctx.input_shape).macs < before.macs
        assert notes["width_plan"] and ctx.budget_unpruned is not None
        # every kept width is one the latency model offered: a tile multiple, the floor or the full width
        for root, (unpruned, kept) in notes["width_plan"].items():
            assert kept < unpruned, root
            assert kept % 8 == 0 or kept == max(8, -(-unpruned // 10)), (root, unpruned, kept)
        ctx.adapter.check(pruned, ctx.input_shape, ctx.data.num_classes)

    @pytest.mark.parametrize("mode", ["ptq", "qat"])
    def test_int8_exports_agree_and_load_outside(self, trained, tmp_path, mode):
        stages = f"[{{type: quantize, mode: {mode}{', epochs: 1' if mode == 'qat' else ''}}}]"
        export = "[{format: tflite, precision: int8}, {format: openvino, precision: int8}]"
        ctx, model = self.stage_ctx(trained, tmp_path, stages, export)
        quantized = run_stage(ctx.recipe.stages[0], 0, model, ctx)
        reference = ctx.adapter.predict(quantized, ctx.data.test.x)
        assert (reference.argmax(1) == ctx.data.test.y).mean() > 0.5
        for artifact, logits in self.exported_int8(quantized, ctx, tmp_path / "out").values():
            outside = _run_outside(artifact.path, ctx.data.test.x[:16])
            np.testing.assert_allclose(outside, logits[:16], atol=1e-4)

    @pytest.mark.parametrize("mode", ["ptq", "qat"])
    def test_keep_float_layer_is_float_in_the_int8_file(self, trained, tmp_path, mode):
        """keep_float's layer computes in float32 in the int8 .tflite (its weights float32, the others int8),
        and the file still agrees with the quantized model."""
        epochs = ", epochs: 1" if mode == "qat" else ""
        stages = f"[{{type: quantize, mode: {mode}, keep_float: [fc]{epochs}}}]"
        ctx, model = self.stage_ctx(trained, tmp_path, stages, "[{format: tflite, precision: int8}]")
        quantized = run_stage(ctx.recipe.stages[0], 0, model, ctx)
        assert ctx.notes[0]["keep_float"] == ["fc"] and ctx.notes[0]["float_weight_ops"] == 1
        self.exported_int8(quantized, ctx, tmp_path / "out", float_weights=1)

    def test_a_plan_float_form_is_float_in_both_int8_files(self, trained, tmp_path):
        """A precision plan's float form of one conv: that conv's weights are float32 in the .tflite, the
        OpenVINO artifact is exported from the same plan, and both agree with the planned model."""
        export = "[{format: tflite, precision: int8}, {format: openvino, precision: int8}]"
        ctx, planner = self.ptq_planner(trained, tmp_path, export)
        try:
            convs = [op for op in planner.ops if op.kind == "conv" and "float" in op.forms]
            assert len(convs) >= 3, planner.ops
            with pytest.raises(ValueError, match="does not have"):
                planner.derive({"no-such-op": "float"})
            derived = planner.derive({convs[1].node: "float"})
        finally:
            planner.close()
        self.exported_int8(derived, ctx, tmp_path / "out", float_weights=1)

    def test_auto_export_races_int8_against_fp32(self, trained, tmp_path, monkeypatch):
        monkeypatch.setenv("EDGECOMPRESS_CACHE", str(tmp_path / "cache"))
        ctx, planner = self.ptq_planner(trained, tmp_path, "[{format: tflite, precision: auto}]")
        try:
            plan = planner.plan(ctx.recipe.export[0])
        finally:
            planner.close()
        names = {c.name for c in plan.candidates}
        assert "fp32" in names and "plan" in names, names  # the whole models were timed against each other
        fastest = min(plan.candidates, key=lambda c: c.p50_ms)
        assert plan.chosen == fastest.name and all(len(c.rounds_p50_ms) >= 5 for c in plan.candidates)
        assert plan.val_accuracy["float model"] > 0.5

    def test_float_exports_match_the_model(self, trained, tmp_path):
        export = "[{format: tflite, precision: fp32}, {format: openvino, precision: fp32}, {format: tflite, precision: fp16}]"
        ctx, model = self.stage_ctx(trained, tmp_path, "[]", export)
        reference = ctx.adapter.predict(model, ctx.data.test.x)
        for spec in ctx.recipe.export:
            artifact = EXPORTERS.get(spec.format)().export(model, spec, ctx, tmp_path / "out")
            out = run_artifact(artifact, ctx.data.test.x, num_outputs=10, threads=1, ui=ctx.ui)
            assert (out.logits.argmax(1) == reference.argmax(1)).mean() >= 0.99, spec.artifact_name
            assert np.abs(out.logits - reference).max() < (0.05 if spec.precision == "fp16" else 1e-3)

    def test_checkpoint_round_trip(self, trained, tmp_path):
        ctx, model = trained
        ctx.adapter.checkpoint_save(model, tmp_path / "model.ckpt")
        again = ctx.adapter.checkpoint_load(tmp_path / "model.ckpt")
        x = ctx.data.test.x[:16]
        np.testing.assert_allclose(ctx.adapter.predict(again, x), ctx.adapter.predict(model, x), atol=1e-6)


def _run_outside(path: Path, images: np.ndarray) -> np.ndarray:
    """The artifact run by its runtime's own Python API, without edgecompress."""
    if path.suffix == ".tflite":
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=str(path))
        it.allocate_tensors()
        inp, out = it.get_input_details()[0], it.get_output_details()[0]
        rows = []
        for image in images:
            it.set_tensor(inp["index"], image[None].astype(np.float32))
            it.invoke()
            rows.append(it.get_tensor(out["index"])[0].copy())
        return np.stack(rows)
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return np.stack([compiled(image[None])[0][0] for image in images])


class TestTorch(FrameworkContract):
    framework = "torch"
    model = f"{{source: '{REPO / 'examples' / 'models.py'}:tiny_cnn', input_shape: [1, 1, 16, 16]}}"
    timed_model = (
        f"{{source: '{REPO / 'examples' / 'models.py'}:quickstart_cnn', input_shape: [1, 1, 32, 32]}}"
    )
    layout = "NCHW"


@needs_keras
class TestKeras(FrameworkContract):
    framework = "keras"
    model = (
        f"{{source: '{REPO / 'examples' / 'keras_models.py'}:quickstart_cnn', input_shape: [1, 16, 16, 1], "
        "framework: keras, kwargs: {input_shape: [16, 16, 1], width: 8}}"
    )
    timed_model = (
        f"{{source: '{REPO / 'examples' / 'keras_models.py'}:quickstart_cnn', input_shape: [1, 32, 32, 1], "
        "framework: keras}"
    )
    layout = "NHWC"
