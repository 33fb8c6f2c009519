"""Pattern sparsity end to end: 2:4 and 1x4 blocks at 50% on a torch model, held through distillation and
int8 (QAT for 2:4, PTQ for blocks), read back from the exported .tflite and OpenVINO files (independently of
the build's own check), within a point of the dense reference, smaller compressed, and every speed claim in
the report backed by the two measurements it compares."""

from __future__ import annotations

import numpy as np
import pytest

from edgecompress.exporters.weights_readback import read_weights
from edgecompress.pipeline import run_build
from edgecompress.report_sparsity import NOISE, dense_twin
from tests.conftest import EXAMPLES

pytestmark = pytest.mark.integration

RECIPE = """\
name: sparse-{name}
seed: 0
model: {{source: {examples}:quickstart_cnn, input_shape: [1, 1, 16, 16], kwargs: {{width: 16}}}}
data: {{dataset: digits, image_size: [16, 16], normalize: {{mean: [0.5], std: [0.5]}}}}
stages:
  - {{type: train, epochs: 6, lr: 0.005}}
  - {prune}
  - {{type: distill, epochs: 8, lr: 0.002}}
  - {quantize}
export:
  - {{format: tflite, precision: fp32}}
  - {{format: tflite, precision: int8}}
  - {{format: openvino, precision: int8}}
profile: {{runs: 30, warmup_seconds: 0.1, rounds: 2}}
gates: {{max_accuracy_drop: 0.01}}
"""

CASES = {
    "nm": ("{type: prune, method: nm, n: 2, m: 4}", "{type: quantize, mode: qat, epochs: 1}"),
    "block": (
        "{type: prune, method: block, block: [1, 4], sparsity: 0.5, sparsity_schedule: polynomial}",
        "{type: quantize, mode: ptq}",
    ),
}


@pytest.fixture(scope="module", params=list(CASES))
def built(request, tmp_path_factory):
    name = request.param
    root = tmp_path_factory.mktemp(name)
    recipe = root / "recipe.yaml"
    prune, quantize = CASES[name]
    recipe.write_text(RECIPE.format(name=name, examples=EXAMPLES, prune=prune, quantize=quantize))
    out = root / "out"
    return name, out, run_build(recipe, out=out, verbosity=0)


def groups_hold(values: np.ndarray, name: str) -> bool:
    """Every group of four consecutive input channels (at one output and position) of a canonical
    [out, in, kh, kw] weight holds at most two non-zeros (2:4), or is all zero or all kept-block (1x4)."""
    o, i = values.shape[:2]
    groups = (values != 0).reshape(o, i // 4, 4, -1).sum(axis=2)
    if name == "nm":
        return bool((groups <= 2).all())
    return bool(((groups == 0).mean()) >= 0.5 - 1e-9)


def test_the_files_hold_the_pattern_read_back_independently(built):
    name, out, report = built
    plan = next(s.notes["sparsity_plan"] for s in report.steps if "sparsity_plan" in s.notes)
    assert plan["layers"] and "stem.0" in plan["dense"]
    for artifact in ("tflite-fp32.tflite", "tflite-int8.tflite", "openvino-int8.xml"):
        weights = [w for w in read_weights(out / artifact) if w.groups == 1 and w.values.shape[1] % 4 == 0]
        assert len(weights) >= len(plan["layers"]), artifact
        sparse = [w for w in weights if (w.values == 0).mean() >= 0.45]
        assert len(sparse) == len(plan["layers"]), (
            f"{artifact}: {[(w.name[-30:], (w.values == 0).mean()) for w in weights]}"
        )
        for w in sparse:
            assert groups_hold(w.values, name), f"{artifact} {w.name}"
    for a in report.artifacts:
        if a.role == "export":
            assert a.sparsity is not None and a.sparsity.holds, a.name
            assert len(a.sparsity.layers) == len(plan["layers"])


def test_accuracy_within_a_point_and_compressed_size_falls(built):
    _, _, report = built
    reference = next(s for s in report.steps if s.name == report.reference_step)
    for a in report.artifacts:
        if a.role != "export":
            continue
        assert reference.test_accuracy - a.parity.accuracy <= 0.01, a.name
        twin = dense_twin(report, a)
        assert twin is not None and twin.role == "dense-reference"
        assert a.zstd_bytes < 0.9 * twin.zstd_bytes and a.gzip_bytes < 0.9 * twin.gzip_bytes, a.name


def test_every_speed_claim_matches_the_measurements(built):
    _, out, report = built
    text = (out / "report.md").read_text()
    assert "## Sparsity: what the zeros bought" in text
    text = text.split("## Sparsity: what the zeros bought")[1].split("\n## ")[0]
    html = (out / "report.html").read_text()
    assert 'id="sparsity"' in html
    for a in report.artifacts:
        twin = dense_twin(report, a) if a.role == "export" else None
        for device, m in a.measurements.items() if twin else []:
            ratio = twin.measurements[device].latency.p50_ms / m.latency.p50_ms
            row = next(line for line in text.splitlines() if line.startswith(f"| {device} | {a.name} |"))
            assert f"{ratio:.2f}x" in row
            # the HTML report says what the Markdown one does (which verdict depends on the timing)
            verdict = next(v for v in ("no speed-up shown", "faster", "(slower)") if v in row)
            assert verdict in html, (a.name, row)
            if "faster" in row:
                assert ratio > 1 + NOISE
            if "no speed-up shown" in row:
                assert "size only" in row
