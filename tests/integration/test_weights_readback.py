"""Weights read back from exported files keep the zeros planted in the torch model.

A small CNN (stem conv + BatchNorm, depthwise conv, 1x1 conv, strided 3x3 conv, linear) gets exact zeros in
known patterns: whole stem kernels, the centre column of even depthwise kernels, every other group of 4
input channels of the 1x1 conv, whole 3x3 kernels where (out + in) % 3 == 0, and 2 of every 4 inputs of the
classifier. The project's exporters write it to TFLite fp32 / fp16 / int8 and OpenVINO fp32 / fp16 / int8
(int8 after a PTQ `quantize` stage), and `read_weights` reads each file back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("litert_torch")
pytest.importorskip("openvino")

from torch import nn  # noqa: E402

from edgecompress.console import UI  # noqa: E402
from edgecompress.context import RunContext  # noqa: E402
from edgecompress.data import load_data  # noqa: E402
from edgecompress.exporters.weights_readback import FileWeight, read_weights  # noqa: E402
from edgecompress.recipe import parse_recipe  # noqa: E402
from edgecompress.registry import EXPORTERS, FRAMEWORKS, STAGES  # noqa: E402

pytestmark = pytest.mark.integration

RECIPE = """\
name: weights-readback
model: {source: tiny.py:tiny, input_shape: [1, 1, 8, 8]}
data: {dataset: digits, image_size: [8, 8], batch_size: 32}
stages:
  - {type: quantize, mode: ptq, calibration_samples: 32}
export:
  - {format: tflite, precision: fp32}
  - {format: tflite, precision: fp16}
  - {format: openvino, precision: fp32}
  - {format: openvino, precision: fp16}
  - {format: tflite, precision: int8}
  - {format: openvino, precision: int8}
"""
LAYERS = ["stem.0", "dw", "pw", "conv", "fc"]
SHAPES = [(16, 1, 3, 3), (16, 1, 3, 3), (48, 16, 1, 1), (8, 48, 3, 3), (10, 8, 1, 1)]
GROUPS = [1, 16, 1, 1, 1]
OPS = {
    # litert-torch lowers the 1-input-channel stem conv to a depthwise conv (channel multiplier 16)
    "tflite": ["DEPTHWISE_CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "CONV_2D", "FULLY_CONNECTED"],
    "openvino": ["Convolution", "GroupConvolution", "Convolution", "Convolution", "MatMul"],
}


class SparseNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = nn.Conv2d(16, 48, 1)
        self.conv = nn.Conv2d(48, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.dw(self.stem(x)))
        y = torch.relu(self.pw(y))
        return self.fc(torch.relu(self.conv(y)).mean((2, 3)))


def _sparse_net() -> SparseNet:
    """The net with planted zeros; every other weight at least 0.05 in magnitude (none rounds to 0 in
    float16), BatchNorm with positive scales and non-trivial statistics."""
    torch.manual_seed(0)
    model = SparseNet().eval()
    params = dict(model.named_parameters())
    with torch.no_grad():
        for layer in LAYERS:
            w = params[f"{layer}.weight"]
            w.copy_(torch.sign(w) * w.abs().clamp(min=0.05) + (w == 0) * 0.05)
        params["stem.0.weight"][[0, 5, 11]] = 0.0  # whole output kernels
        params["stem.0.weight"][3, 0, 1, 1] = 0.0  # one tap
        params["dw.weight"][::2, :, :, 1] = 0.0  # centre column of even channels
        params["pw.weight"][:, 4:8] = 0.0  # every other group of 4 input channels
        params["pw.weight"][:, 12:16] = 0.0
        out, inp = np.meshgrid(np.arange(8), np.arange(48), indexing="ij")
        params["conv.weight"][torch.from_numpy((out + inp) % 3 == 0)] = 0.0  # whole 3x3 kernels
        params["fc.weight"][0::2, 1::2] = 0.0  # 2:4, alternating positions row by row
        params["fc.weight"][1::2, 0::2] = 0.0
        bn = model.stem[1]
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
        bn.running_mean.uniform_(-0.3, 0.3)
        bn.running_var.uniform_(0.5, 2.0)
    return model


def _reference(model: SparseNet) -> list[np.ndarray]:
    """Per layer, the weights as a converter writes them: the stem's with BatchNorm folded in."""
    params = {k: v.detach().numpy().astype(np.float64) for k, v in model.state_dict().items()}
    bn = model.stem[1]
    scale = params["stem.1.weight"] / np.sqrt(params["stem.1.running_var"] + bn.eps)
    out = [params["stem.0.weight"] * scale[:, None, None, None]]
    out += [params[f"{layer}.weight"] for layer in LAYERS[1:]]
    return [w.reshape(shape) for w, shape in zip(out, SHAPES, strict=True)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{artifact name: path} for the six exports, and the reference weights."""
    recipe = parse_recipe(RECIPE)
    out = tmp_path_factory.mktemp("readback")
    ctx = RunContext(
        recipe=recipe,
        recipe_path=Path("r.yaml"),
        workdir=out,
        adapter=FRAMEWORKS.get("torch")(),
        data=load_data(recipe.data, Path("r.yaml"), seed=0),
        ui=UI(verbosity=0),
    )
    model = _sparse_net()
    reference = _reference(model)
    paths = {}
    for spec in recipe.export[:4]:
        paths[spec.artifact_name] = EXPORTERS.get(spec.format)().export(model, spec, ctx, out).path
    ctx.current_stage = 0
    ctx.teacher = ctx.adapter.copy(model)
    quantized = STAGES.get("quantize")(recipe.stages[0]).apply(ctx.adapter.copy(model), ctx)
    for spec in recipe.export[4:]:
        paths[spec.artifact_name] = EXPORTERS.get(spec.format)().export(quantized, spec, ctx, out).path
    return paths, reference


NAMES = ["tflite-fp32", "tflite-fp16", "tflite-int8", "openvino-fp32", "openvino-fp16", "openvino-int8"]


@pytest.mark.parametrize("name", NAMES)
def test_one_weight_per_conv_and_fc_in_order(exported, name):
    paths, _ = exported
    weights = read_weights(paths[name])
    fmt, precision = name.split("-")
    assert all(isinstance(w, FileWeight) for w in weights)
    assert [w.op for w in weights] == OPS[fmt]
    assert [w.values.shape for w in weights] == SHAPES
    assert [w.groups for w in weights] == GROUPS
    dtype = {"fp32": "float32", "fp16": "float16", "int8": "int8"}[precision]
    assert {w.dtype for w in weights} == {dtype} and {w.values.dtype.name for w in weights} == {dtype}
    assert all(w.name for w in weights) and len({w.name for w in weights}) == len(weights)


@pytest.mark.parametrize("name", [n for n in NAMES if not n.endswith("int8")])
def test_float_files_store_exactly_the_planted_zeros(exported, name):
    paths, reference = exported
    for w, ref in zip(read_weights(paths[name]), reference, strict=True):
        assert np.array_equal(w.values == 0, ref == 0), w.name
        # the values themselves, in canonical layout: transposes of OHWI / 1HWC / [G, O/G, ...] are right
        tolerance = 1e-5 if name.endswith("fp32") else 2e-3
        np.testing.assert_allclose(w.values.astype(np.float64), ref, rtol=tolerance, atol=1e-6)


@pytest.mark.parametrize("name", ["tflite-int8", "openvino-int8"])
def test_int8_files_keep_the_planted_zeros(exported, name):
    paths, reference = exported
    for w, ref in zip(read_weights(paths[name]), reference, strict=True):
        planted, stored = ref == 0, w.values == 0
        assert planted.sum() > 0 and np.all(stored[planted]), w.name  # every planted zero is an int 0
        assert (stored & ~planted).mean() < 0.05, w.name  # small weights rounding to 0, nothing more
        # symmetric per-channel int8 with positive BatchNorm scales: the sign of every kept weight survives
        kept = ~stored
        assert np.array_equal(np.sign(w.values[kept]), np.sign(ref[kept])), w.name
        assert np.abs(w.values).max() == 127  # integers as stored, not dequantized floats


def test_tflite_and_openvino_int8_store_the_same_integers(exported):
    """Both exports lower the same quantized graph, whose weights PT2E already stores as int8 constants."""
    paths, _ = exported
    tflite, openvino = read_weights(paths["tflite-int8"]), read_weights(paths["openvino-int8"])
    for a, b in zip(tflite, openvino, strict=True):
        assert np.array_equal(a.values, b.values), (a.name, b.name)


@pytest.mark.parametrize("name", ["tflite-fp32", "tflite-fp16"])
def test_sparse_encoded_tflite_reads_back_like_the_dense_file(exported, name, tmp_path):
    """Weights stored sparse behind DENSIFY (and DEQUANTIZE for float16) by `tflite_sparse.encode_sparse`
    read back as the dense file's, through that module's decoder. (It leaves int8 weights dense: LiteRT's
    int8 kernels read the filter tensor itself and cannot load a DENSIFY output.)"""
    tflite_sparse = pytest.importorskip("edgecompress.exporters.tflite_sparse")
    paths, _ = exported
    encoding = tflite_sparse.encode_sparse(
        paths[name], tmp_path / f"{name}-sparse.tflite", min_sparsity=0.2, block=(1, 4)
    )
    # the 1x1 conv at least: half its input channels are zero in runs of 4, the innermost (I) dim of OHWI
    assert "CONV_2D" in {t.op for t in encoding.tensors}
    dense, sparse = read_weights(paths[name]), read_weights(encoding.path)
    assert [(w.op, w.dtype, w.groups) for w in sparse] == [(w.op, w.dtype, w.groups) for w in dense]
    for a, b in zip(dense, sparse, strict=True):
        assert b.values.dtype == a.values.dtype and np.array_equal(a.values, b.values), a.name
