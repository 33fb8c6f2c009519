"""A build whose OpenVINO int8 export asks for sparse weight decompression: the option reaches parity, the
profiling runs and the sidecar, and the report says what it did on this machine's CPU.

examples/mlp_models.py:digits_mlp (1024-1024-1024-10: the hidden weights have both dimensions multiples of 64),
one epoch, 80% magnitude sparsity, PTQ int8 with a pinned all-int8 precision plan (no latency table to build:
the precision race's runs are the unit tests' business). The assertions branch on this machine's ISA (/proc/cpuinfo
amx_tile + amx_int8): with AMX OpenVINO packs the sparse hidden layers (`sparse_layers`); without, it ignores
the option and the measurements say so in `runtime_warnings`. No speed is asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("openvino")
pytest.importorskip("nncf")

from edgecompress.exporters.base import artifact_from_file  # noqa: E402
from edgecompress.pipeline import run_build  # noqa: E402
from edgecompress.runners.local import LocalRunner  # noqa: E402
from edgecompress.runtimes.probe import cpu_info  # noqa: E402
from edgecompress.specs import DeviceProfile  # noqa: E402
from tests.conftest import REPO  # noqa: E402

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings(r"ignore:os\.fork\(\) was called:RuntimeWarning"),
]

OPTIONS = {"sparse_weights_decompression_rate": 0.5}
HAS_AMX = {"amx_tile", "amx_int8"} <= set(cpu_info()[1])

RECIPE = f"""\
name: runtime-options
seed: 0
model: {{source: {REPO / "examples" / "mlp_models.py"}:digits_mlp, input_shape: [1, 1, 32, 32]}}
data: {{dataset: digits, image_size: [32, 32], normalize: {{mean: [0.5], std: [0.5]}}}}
stages:
  - {{type: train, epochs: 1, lr: 0.002}}
  - {{type: prune, method: magnitude, sparsity: 0.8}}
  - {{type: quantize, mode: ptq}}
export:
  - {{format: openvino, precision: int8, plan: plan.yaml, runtime_options: {{sparse_weights_decompression_rate: 0.5}}}}
devices: [desktop]
profile: {{runs: 30, warmup_seconds: 0.1, rounds: 1}}
"""
#: Every op in its plain int8 form.
PLAN = """\
plans:
  openvino-int8: {artifact: openvino-int8, format: openvino, runtime: openvino, device: desktop, precision: int8, ops: {}}
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("runtime_options")
    recipe = root / "recipe.yaml"
    recipe.write_text(RECIPE)
    (root / "plan.yaml").write_text(PLAN)
    out = root / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGECOMPRESS_CACHE", str(root / "cache"))
        return out, run_build(recipe, out=out, verbosity=0)


def test_measurements_say_what_the_option_did(built):
    _, report = built
    artifact = next(a for a in report.artifacts if a.name == "openvino-int8")
    measured = artifact.measurements["desktop"]
    assert measured.runtime_options == OPTIONS
    if HAS_AMX:
        assert measured.sparse_layers, "the 80%-zero hidden layers are packed on AMX"
        assert measured.runtime_warnings == []
    else:
        assert measured.sparse_layers == []
        assert len(measured.runtime_warnings) == 1 and "lacks AMX" in measured.runtime_warnings[0]


def test_sidecar_keeps_the_option_for_a_later_profile(built):
    out, _ = built
    sidecar = json.loads((out / "openvino-int8.json").read_text())
    assert sidecar["runtime_options"] == OPTIONS
    assert sidecar["runtime_config"]["CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE"] == 0.5
    assert artifact_from_file(out / "openvino-int8.xml").runtime_options == OPTIONS


def test_native_benchmark_app_takes_the_option(built):
    """connection.mode: native runs this environment's benchmark_app with a -load_config file."""
    out, _ = built
    if not (Path(REPO) / ".venv" / "bin" / "benchmark_app").exists():
        pytest.skip("no benchmark_app in this environment")
    device = DeviceProfile.model_validate(
        {
            "name": "native",
            "description": "this machine through benchmark_app",
            "cpu": {"model": "detect", "arch": "detect", "cores": 2},
            "memory_mb": 1024,
            "runtimes": ["openvino"],
            "connection": {"mode": "native", "benchmark_app": str(REPO / ".venv" / "bin" / "benchmark_app")},
        }
    )
    artifact = artifact_from_file(out / "openvino-int8.xml")
    measured = LocalRunner().run(artifact, device, runs=20, warmup_seconds=0.0, threads=1, op_profile=False)
    assert measured.tool == "benchmark_app" and measured.latency.p50_ms > 0
    assert measured.runtime_options == OPTIONS and measured.sparse_layers is None
