"""`encode_sparse` on real .tflite files: tiny torch models with ~75 % of their weights zeroed (elementwise and
in 1x4 blocks), converted by litert-torch, stored at fp32, fp16 (DEQUANTIZE'd weights), int8 weight-only,
int8 static and int8 dynamic-range (ai-edge-quantizer), then run by LiteRT's Interpreter with the XNNPACK
delegate and with TFLite's builtin kernels only. The sparse file must be smaller, load, run the same ops on
the same executor and give the original's outputs; `dense_values` must give back the original weights, and
the encoding must be the one TFLite's own FormatConverter makes."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")

from torch import nn  # noqa: E402

from edgecompress.exporters import tflite_sparse  # noqa: E402
from edgecompress.exporters.tflite_sparse import SparseEncoding, dense_values, encode_sparse  # noqa: E402

pytestmark = pytest.mark.integration

#: On x86 with AVX XNNPACK never switches to its sparse (NCHW) kernels, so outputs must be bitwise equal;
#: elsewhere (ARM64) it may, for fp32/fp16 1x1 convs with >= 2/3 zeros, and round differently.
SAME_KERNELS = platform.machine().lower() in ("x86_64", "amd64")
#: torch weight -> the TFLite weight layout litert-torch writes (the innermost dim is the CSR one).
TO_TFLITE = {
    "c1": (0, 2, 3, 1),
    "c2": (0, 2, 3, 1),
    "dw": (1, 2, 3, 0),
    "up": (1, 2, 3, 0),
    "c3": (0, 2, 3, 1),
}


class Tiny(nn.Module):
    """conv 3x3, conv 1x1, depthwise 3x3, transposed conv, strided conv, two linears: every weight op."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 32, 1)
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.up = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.c3 = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16 * 8 * 8, 64)
        self.fc2 = nn.Linear(64, 12)

    def forward(self, x):
        for layer in (self.c1, self.c2, self.dw, self.up, self.c3):
            x = torch.relu(layer(x))
        return self.fc2(torch.relu(self.fc(torch.flatten(x, 1))))


def _tflite(tmp: Path, name: str, *, block: int) -> Path:
    """Tiny with 75 % of each weight zeroed, in blocks of `block` along the TFLite innermost dim where it
    divides it (elementwise elsewhere), converted by litert-torch to tmp/name.tflite."""
    import litert_torch

    torch.manual_seed(0)
    model = Tiny().eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for key, layer in model.named_children():
            weight = layer.weight.permute(*TO_TFLITE.get(key, (0, 1)))  # a view: zeros written through
            size = block if weight.shape[-1] % block == 0 else 1
            mask = torch.rand((*weight.shape[:-1], weight.shape[-1] // size), generator=generator) < 0.75
            weight[mask.repeat_interleave(size, dim=-1)] = 0.0
    path = tmp / f"{name}.tflite"
    litert_torch.convert(model, (torch.randn(1, 3, 8, 8),)).export(str(path))
    return path


def _quantized(src: Path, name: str, recipe_name: str) -> Path:
    from ai_edge_quantizer import quantizer, recipe

    q = quantizer.Quantizer(str(src))
    q.load_quantization_recipe(getattr(recipe, recipe_name)())
    calibration = None
    if recipe_name.startswith("static"):
        rng = np.random.default_rng(0)
        samples = [{"args_0": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(8)]
        calibration = q.calibrate({"serving_default": samples})
    path = src.with_name(f"{name}.tflite")
    path.write_bytes(bytes(q.quantize(calibration, enable_progress_report=False).quantized_model))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    from edgecompress.exporters.tflite_write import float16_weights

    tmp = tmp_path_factory.mktemp("sparse")
    fp32 = _tflite(tmp, "fp32", block=1)
    fp16 = tmp / "fp16.tflite"
    fp16.write_bytes(float16_weights(fp32.read_bytes()))
    return {
        "fp32": fp32,
        "fp32-1x4": _tflite(tmp, "fp32-1x4", block=4),
        "fp16": fp16,
        "int8-weight-only": _quantized(fp32, "wo8", "weight_only_wi8_afp32"),
        "int8-static": _quantized(fp32, "s8", "static_wi8_ai8"),
        "int8-dynamic-range": _quantized(fp32, "dyn8", "dynamic_wi8_afp32"),
    }


def _interpreter(path: Path, *, builtin: bool):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if builtin else OpResolverType.AUTO
    interpreter = Interpreter(model_path=str(path), num_threads=1, experimental_op_resolver_type=kind)
    interpreter.allocate_tensors()
    return interpreter


def _outputs(path: Path, inputs: list[np.ndarray], *, builtin: bool) -> list[np.ndarray]:
    interpreter = _interpreter(path, builtin=builtin)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    results = []
    for x in inputs:
        interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
        interpreter.invoke()
        results.append(interpreter.get_tensor(out["index"]).copy())
    return results


def _executors(path: Path) -> list[tuple[str, str]]:
    from edgecompress.runtimes.sessions import litert_op_inventory

    inventory = litert_op_inventory(_interpreter(path, builtin=False))
    return [(str(op["type"]), str(op["executed_by"])) for op in inventory]


def _model(path: Path):
    from ai_edge_litert.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(path.read_bytes()))


def _check(src: Path, result: SparseEncoding) -> None:
    """Smaller, same executors (+ DENSIFY on XNNPACK), same outputs on both op resolvers, exact weights."""
    assert result.bytes_after == result.path.stat().st_size < result.bytes_before == src.stat().st_size
    assert sum(t.bytes_sparse for t in result.tensors) < sum(t.bytes_dense for t in result.tensors)
    before, after = _executors(src), _executors(result.path)
    assert [op for op in after if op[0] != "DENSIFY"] == before
    assert [op for op in after if op[0] == "DENSIFY"] == [("DENSIFY", "XNNPACK")] * len(result.tensors)
    rng = np.random.default_rng(7)
    inputs = [rng.standard_normal((1, 3, 8, 8)).astype(np.float32) for _ in range(3)]
    for builtin in (False, True):
        for a, b in zip(
            _outputs(src, inputs, builtin=builtin),
            _outputs(result.path, inputs, builtin=builtin),
            strict=True,
        ):
            if SAME_KERNELS or builtin:
                assert a.tobytes() == b.tobytes()
            else:
                assert np.abs(a.astype(np.float64) - b).max() <= 1e-5 * max(1.0, float(np.abs(a).max()))
    original, encoded = _model(src), _model(result.path)
    tensors = {tflite_sparse._name(t): t for t in encoded.subgraphs[0].tensors}
    for kept in original.subgraphs[0].tensors:
        name = tflite_sparse._name(kept)
        if name in {t.name for t in result.tensors}:
            want = dense_values(original, kept)
            for got in (
                dense_values(encoded, tensors[name]),
                dense_values(encoded, tensors[f"{name}_densified"]),
            ):
                assert got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()
            assert tensors[name].sparsity is not None and kept.sparsity is None


def test_fp32_every_weight_op_elementwise(models, tmp_path):
    result = encode_sparse(models["fp32"], tmp_path / "s.tflite")
    ops = sorted(t.op for t in result.tensors)
    assert ops == ["CONV_2D"] * 3 + [
        "DEPTHWISE_CONV_2D",
        "FULLY_CONNECTED",
        "FULLY_CONNECTED",
        "TRANSPOSE_CONV",
    ]
    assert all(t.dtype == "float32" and t.block == (1, 1) and 0.7 < t.sparsity < 0.8 for t in result.tensors)
    assert result.skipped == []
    assert result.bytes_after < 0.5 * result.bytes_before
    _check(models["fp32"], result)


def test_fp32_blocks_1x4(models, tmp_path):
    elementwise = encode_sparse(models["fp32-1x4"], tmp_path / "e.tflite")
    result = encode_sparse(models["fp32-1x4"], tmp_path / "b.tflite", block=(1, 4))
    blocks = {t.name.split("_")[-1].split(";")[0]: t.block for t in result.tensors}
    assert blocks == {
        "c1": (1, 1),
        "c2": (1, 4),
        "dw": (1, 4),
        "up": (1, 4),
        "c3": (1, 4),
        "fc": (1, 4),
        "fc2": (1, 4),
    }
    assert result.bytes_after < elementwise.bytes_after
    _check(models["fp32-1x4"], result)


def test_fp16_weights_behind_dequantize(models, tmp_path):
    result = encode_sparse(models["fp16"], tmp_path / "s.tflite")
    assert len(result.tensors) == 7 and {t.dtype for t in result.tensors} == {"float16"}
    _check(models["fp16"], result)


def test_int8_weight_only_behind_dequantize(models, tmp_path):
    result = encode_sparse(models["int8-weight-only"], tmp_path / "s.tflite")
    assert {t.dtype for t in result.tensors} == {"int8"}
    assert {"FULLY_CONNECTED", "CONV_2D", "TRANSPOSE_CONV"} <= {t.op for t in result.tensors}
    assert all("B of tables >=" in reason for reason in result.skipped)  # only too small to gain
    _check(models["int8-weight-only"], result)


def test_int8_static_convs_only(models, tmp_path):
    """int8 CONV_2D / TRANSPOSE_CONV (per-channel scales kept on the densified tensor) are encoded; int8
    FULLY_CONNECTED is skipped: XNNPACK would fail to load it."""
    result = encode_sparse(models["int8-static"], tmp_path / "s.tflite")
    assert {t.op for t in result.tensors} == {"CONV_2D", "TRANSPOSE_CONV"}
    assert sum("int8 FULLY_CONNECTED: XNNPACK" in reason for reason in result.skipped) == 2
    _check(models["int8-static"], result)


def test_int8_dynamic_range_is_left_dense(models, tmp_path):
    result = encode_sparse(models["int8-dynamic-range"], tmp_path / "s.tflite")
    assert result.tensors == []
    assert sum("dynamic-range" in reason for reason in result.skipped) == 6  # all but the depthwise
    assert _outputs(result.path, [np.zeros((1, 3, 8, 8), np.float32)], builtin=False)


@pytest.mark.parametrize(
    ("model", "op"), [("int8-static", "FULLY_CONNECTED"), ("int8-dynamic-range", "CONV_2D")]
)
def test_what_is_skipped_really_fails_in_xnnpack(models, tmp_path, monkeypatch, model, op):
    """Forced through, those int8 weights load with builtin kernels but not with XNNPACK. When this test fails,
    a new runtime takes them: relax `_unsupported`."""
    monkeypatch.setattr(tflite_sparse, "_unsupported", lambda *args: None)
    monkeypatch.setattr(tflite_sparse, "OVERHEAD", -(10**9))
    result = encode_sparse(models[model], tmp_path / "forced.tflite", min_sparsity=0.0)
    assert op in {t.op for t in result.tensors}
    _interpreter(result.path, builtin=True)
    with pytest.raises(RuntimeError, match=f"failed to delegate {op}"):
        _interpreter(result.path, builtin=False)


def test_dense_models_are_left_alone(models, tmp_path):
    result = encode_sparse(models["fp32"], tmp_path / "s.tflite", min_sparsity=0.9)
    assert result.tensors == [] and len(result.skipped) == 7
    assert all("zeros < min_sparsity 90%" in reason for reason in result.skipped)
    assert result.path.read_bytes() == models["fp32"].read_bytes()


@pytest.mark.parametrize("block", [(1, 1), (1, 4), (4, 1), (2, 4)])
def test_layout_is_tflite_format_converter_s(block):
    """The values/segments/indices equal TFLite's FormatConverter (DenseToSparse) for the same layout, and
    dense_values decodes them and a two-level CSR layout of its SparseToDense."""
    from ai_edge_litert import format_converter_wrapper_pybind11 as fc
    from ai_edge_litert import schema_py_generated as fb

    rng = np.random.default_rng(3)
    shape = [6, 3, 4, 16]
    dense = rng.standard_normal(shape).astype(np.float32)
    dense[rng.random(shape) < 0.7] = 0.0
    values, segments, indices = tflite_sparse._csr(dense, block)
    blocked = [(2 + i, b) for i, b in enumerate(block) if b != 1]
    dim = fc.TfLiteDimensionType
    formats = [dim.TF_LITE_DIM_DENSE] * 3 + [dim.TF_LITE_DIM_SPARSE_CSR]
    converter = fc.FormatConverterFp32(
        shape, list(range(4 + len(blocked))), formats, [b for _, b in blocked], [d for d, _ in blocked]
    )
    converter.DenseToSparse(np.ascontiguousarray(dense).data)
    assert np.array_equal(converter.GetData(), values)
    assert converter.GetDimMetadata()[6:8] == [segments.tolist(), indices.tolist()]

    def decode(params, data) -> np.ndarray:
        model = fb.ModelT()
        model.buffers = [fb.BufferT(), fb.BufferT(data=np.frombuffer(data.tobytes(), np.uint8))]
        tensor = fb.TensorT(shape=shape, type=0, buffer=1, name="w", sparsity=params)
        return dense_values(model, tensor)

    assert (
        decode(tflite_sparse._sparsity(shape, block, segments, indices), values).tobytes() == dense.tobytes()
    )
    # every dim SPARSE_CSR, as FormatConverter writes it: a layout encode_sparse never writes
    csr = [dim.TF_LITE_DIM_SPARSE_CSR] * 4
    converter = fc.FormatConverterFp32(shape, [0, 1, 2, 3], csr, [], [])
    converter.DenseToSparse(np.ascontiguousarray(dense).data)
    meta = converter.GetDimMetadata()
    params = fb.SparsityParametersT(traversalOrder=[0, 1, 2, 3], dimMetadata=[])
    for level in range(4):
        params.dimMetadata.append(
            fb.DimensionMetadataT(
                format=1,
                arraySegmentsType=1,
                arraySegments=fb.Int32VectorT(np.asarray(meta[2 * level], np.int32)),
                arrayIndicesType=1,
                arrayIndices=fb.Int32VectorT(np.asarray(meta[2 * level + 1], np.int32)),
            )
        )
    assert decode(params, np.asarray(converter.GetData(), np.float32)).tobytes() == dense.tobytes()
