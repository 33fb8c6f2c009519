"""Store the zero-rich weights of a .tflite in TFLite's sparse tensor format, each behind a DENSIFY op.

The file gets smaller; DENSIFY unpacks each weight once, at load. What the format and the installed runtime
(ai-edge-litert 2.3.0) allow, read in google-ai-edge/LiteRT and google/XNNPACK and measured with the
Interpreter (XNNPACK delegate on, and BUILTIN_WITHOUT_DEFAULT_DELEGATES):

- Format (tflite/converter/transforms/dense_to_sparse_pass.cc, the MLIR pass behind
  `tf.lite.Optimize.EXPERIMENTAL_SPARSITY`): rank-2 (FC) and rank-4 (conv) constants, float32, float16 (in
  front of a DEQUANTIZE) and int8, with >= 30 % zeros; in-order traversal, every dim DENSE but the innermost,
  which is SPARSE_CSR, plus DENSE block dims. Block maps: only FULLY_CONNECTED has any (1x4 float, 1x16 int8,
  read sparse by its own kernel, version 8, which XNNPACK refuses); every other weight goes elementwise behind
  DENSIFY. This module writes that layout (equal to TFLite's FormatConverter's), DENSIFY for all, with an
  optional (rows, cols) block over the two innermost dims, indices as uint8/uint16/int32, whichever fits;
  -0.0 counts as zero (decoded +0.0). tflite/core/tools/verifier.cc checks the tables against shape and buffer.
- DENSIFY (tflite/kernels/densify.cc): a constant sparse float32, float16 or int8 input; the output takes
  the input's type and the quantization written on the output tensor (per-channel scales are kept).
- XNNPACK (tflite/delegates/xnnpack/xnnpack_delegate.cc, kTfLiteBuiltinDensify): unpacks such a DENSIFY
  (fp32, fp16, int8) at delegation into a "quasi-static" weight, also through a following DEQUANTIZE, and
  marks it in `static_sparse_weights_`; a partition reading one is built with XNN_FLAG_HINT_SPARSE_INFERENCE
  (DENSIFY is the only way a .tflite sets it). XNNPACK then (src/subgraph.c, xnn_subgraph_rewrite_for_nchw)
  runs fp32/fp16 NCHW clusters whose 1x1 convs have >= 2/3 zeros with sparse kernels, only where
  xnn_is_chw_compatible_config holds: never on x86 with AVX, so in practice on ARM64. Elsewhere it packs the
  dense weights as before: same kernels, bitwise-equal outputs (measured here, AVX-512). On ARM64 the sparse
  kernels may round differently (not measured here).
- int8 weights read directly, not via DEQUANTIZE: int8 CONV_2D, DEPTHWISE_CONV_2D and TRANSPOSE_CONV take the
  unpacked weight and load; int8 FULLY_CONNECTED and dynamic-range (float activations) CONV_2D / FC /
  TRANSPOSE_CONV read `GetTensorData(&filter_tensor)`, null for a DENSIFY output, so the delegate fails to
  prepare and the interpreter does not load ("failed to delegate CONV_2D node #n"): skipped here. TFLite's
  builtin kernels run them all (and dynamic-range DEPTHWISE_CONV_2D, which XNNPACK leaves to them).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.errors import ExportError

#: TFLite builtin ops whose constant weight (input 1) may be stored sparse behind a DENSIFY op.
WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")
#: TensorType code -> numpy dtype, for decoding.
DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_, 7: np.int16}
DTYPES |= {9: np.int8, 10: np.float64, 12: np.uint64, 15: np.uint32, 16: np.uint16}
#: The TensorTypes DENSIFY takes (in every kernel of the runtime), by name.
ENCODABLE = {0: "float32", 1: "float16", 9: "int8"}
#: Bytes a sparse weight adds besides its values and index arrays (DENSIFY op, the dense tensor, the
#: sparsity tables), plus the length of its name; measured about 230 + name on litert-torch models.
OVERHEAD = 240


@dataclass(frozen=True)
class EncodedTensor:
    """A weight stored sparse: its op, stored dtype, dense shape, zero fraction, and bytes dense vs sparse
    (values + index arrays). block: (rows, cols) over the two innermost dims, (1, 1) for single elements."""

    name: str
    op: str
    dtype: str
    shape: list[int]
    sparsity: float
    bytes_dense: int
    bytes_sparse: int
    block: tuple[int, int] = (1, 1)


@dataclass(frozen=True)
class SparseEncoding:
    """The written file, the weights stored sparse, file sizes, and a one-line reason per weight left dense."""

    path: Path
    tensors: list[EncodedTensor]
    bytes_before: int
    bytes_after: int
    skipped: list[str]


def _name(tensor: Any) -> str:
    return tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)


def _constant(model: Any, tensor: Any) -> np.ndarray | None:
    """The flat stored values of a constant tensor, or None."""
    buffer = model.buffers[tensor.buffer] if tensor.buffer else None
    if buffer is None or buffer.data is None or len(buffer.data) == 0 or tensor.type not in DTYPES:
        return None
    return np.frombuffer(bytes(bytearray(buffer.data)), dtype=DTYPES[tensor.type])


def _index_vector(values: np.ndarray) -> tuple[int, Any]:
    """The smallest SparseIndexVector (union type, table) holding `values`."""
    from ai_edge_litert import schema_py_generated as fb

    top = int(values.max()) if values.size else 0
    if top <= 0xFF:
        return fb.SparseIndexVector.Uint8Vector, fb.Uint8VectorT(values.astype(np.uint8))
    if top <= 0xFFFF:
        return fb.SparseIndexVector.Uint16Vector, fb.Uint16VectorT(values.astype(np.uint16))
    return fb.SparseIndexVector.Int32Vector, fb.Int32VectorT(values.astype(np.int32))


def _csr(dense: np.ndarray, block: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, segments, indices) in the converter's layout: SPARSE_CSR over the innermost dim's (blocks of)
    columns, one segment per row of the other dims. A block is kept whole when any value of it is not zero
    (-0.0 counts as zero, as in TFLite's FormatConverter)."""
    rows, cols = block
    lead, height, width = dense.shape[:-2], dense.shape[-2], dense.shape[-1]
    blocks = dense.reshape(*lead, height // rows, rows, width // cols, cols)
    blocks = np.moveaxis(blocks, -3, -2).reshape(-1, width // cols, rows * cols)
    keep = (blocks != 0).any(axis=-1)
    segments = np.concatenate([[0], np.cumsum(keep.sum(axis=1))])
    return blocks[keep].reshape(-1), segments, np.nonzero(keep)[1]


def _sparsity(shape: list[int], block: tuple[int, int], segments: np.ndarray, indices: np.ndarray) -> Any:
    """SparsityParametersT of `_csr`'s layout for a tensor of `shape` (rank >= 2)."""
    from ai_edge_litert import schema_py_generated as fb

    rank = len(shape)
    blocked = [(rank - 2 + i, size) for i, size in enumerate(block) if size != 1]
    sizes = list(shape)
    for dim, size in blocked:
        sizes[dim] //= size
    levels = [fb.DimensionMetadataT(format=fb.DimensionType.DENSE, denseSize=size) for size in sizes[:-1]]
    csr = fb.DimensionMetadataT(format=fb.DimensionType.SPARSE_CSR)
    csr.arraySegmentsType, csr.arraySegments = _index_vector(segments)
    csr.arrayIndicesType, csr.arrayIndices = _index_vector(indices)
    levels.append(csr)
    levels += [fb.DimensionMetadataT(format=fb.DimensionType.DENSE, denseSize=size) for _, size in blocked]
    params = fb.SparsityParametersT()
    params.traversalOrder = list(range(rank + len(blocked)))
    params.blockMap = [dim for dim, _ in blocked] or None
    params.dimMetadata = levels
    return params


def dense_values(model_t: Any, tensor_t: Any) -> np.ndarray:
    """The dense array (declared shape, stored dtype) of a constant tensor of a ModelT, decoded from its sparse
    form when it has one (any traversal order, DENSE / SPARSE_CSR levels and block maps, as TFLite's
    FormatConverter reads them). A DENSIFY op's output is read through the op's sparse input. ExportError
    when the tensor holds no constant data or its tables do not match its buffer."""
    from ai_edge_litert.tools import flatbuffer_utils

    values = _constant(model_t, tensor_t)
    if values is None:
        for graph in model_t.subgraphs:
            for op in graph.operators:
                code = model_t.operatorCodes[op.opcodeIndex]
                if flatbuffer_utils.get_builtin_code_from_operator_code(code) == 124 and any(
                    graph.tensors[t] is tensor_t for t in (op.outputs if op.outputs is not None else [])
                ):
                    return dense_values(model_t, graph.tensors[op.inputs[0]])
        raise ExportError(f"tensor {_name(tensor_t)} holds no constant data")
    shape = [int(d) for d in tensor_t.shape]
    sparsity = tensor_t.sparsity
    if sparsity is None:
        return values.reshape(shape)
    order = [int(d) for d in sparsity.traversalOrder]
    block_map = [int(d) for d in (sparsity.blockMap if sparsity.blockMap is not None else [])]
    levels, rank = sparsity.dimMetadata, len(shape)
    position = np.zeros(1, dtype=np.int64)  # per partial coordinate: its index within the current level
    coords: list[np.ndarray] = []
    for level in levels:
        if level.format == 0:  # DENSE: every index, implicitly
            size = int(level.denseSize)
            coords = [np.repeat(c, size) for c in coords]
            coords.append(np.tile(np.arange(size, dtype=np.int64), len(position)))
            position = np.repeat(position, size) * size + coords[-1]
        else:  # SPARSE_CSR: the indices of segment `position`
            segments = np.asarray(level.arraySegments.values, dtype=np.int64)
            indices = np.asarray(level.arrayIndices.values, dtype=np.int64)
            counts = segments[position + 1] - segments[position]
            position = np.repeat(segments[position] - np.cumsum(counts) + counts, counts)
            position += np.arange(len(position))
            coords = [np.repeat(c, counts) for c in coords]
            coords.append(indices[position])
    if len(position) != len(values):
        raise ExportError(
            f"tensor {_name(tensor_t)}: its sparsity tables address {len(position)} values, its buffer holds "
            f"{len(values)}"
        )
    index = [np.zeros(len(position), dtype=np.int64) for _ in range(rank)]
    for level, dim in enumerate(order[:rank]):
        index[dim] = coords[level]
    for level in range(rank, len(order)):
        dim = block_map[order[level] - rank]
        index[dim] = index[dim] * int(levels[level].denseSize) + coords[level]
    dense = np.zeros(shape, dtype=values.dtype)
    dense[tuple(index)] = values
    return dense


def _unsupported(graph: Any, tensor: Any, index: int, readers: list[tuple[str, Any]]) -> str | None:
    """Why a DENSIFY output may not replace constant `index` for its readers (kind, op), or None."""
    dtype = ENCODABLE.get(tensor.type)
    if dtype is None:
        return f"{np.dtype(DTYPES.get(tensor.type, np.void)).name} weight; DENSIFY takes float32/float16/int8"
    if index in list(graph.outputs if graph.outputs is not None else []):
        return "a graph output"
    for kind, op in readers:
        if kind == "DEQUANTIZE" and dtype in ("float16", "int8"):
            continue  # DENSIFY -> DEQUANTIZE -> float op: both unpacked once at load, by XNNPACK and TFLite
        if kind not in WEIGHT_OPS or list(op.inputs).index(index) != 1:
            return f"also read by {kind or 'a custom op'}"
        if dtype == "float16":
            return f"float16 weight read by {kind} itself, not through a DEQUANTIZE"
        activation = graph.tensors[op.inputs[2 if kind == "TRANSPOSE_CONV" else 0]]
        hybrid = activation.type != 9
        if dtype == "int8" and (kind == "FULLY_CONNECTED" or (hybrid and kind != "DEPTHWISE_CONV_2D")):
            mode = "dynamic-range" if hybrid else "int8"
            return (
                f"{mode} {kind}: XNNPACK reads its int8 filter from the tensor itself (GetTensorData), "
                "empty for a DENSIFY output, and the interpreter fails to load"
            )
    return None


def encode_sparse(
    src: Path, dst: Path, *, min_sparsity: float = 0.5, block: tuple[int, int] | None = None
) -> SparseEncoding:
    """Write `src` to `dst` with every constant CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED / TRANSPOSE_CONV
    weight (or the float16/int8 constant behind its DEQUANTIZE) stored sparse behind a DENSIFY op when it has
    >= `min_sparsity` zeros, the installed runtime loads it that way, and the sparse form is smaller; the rest
    is untouched. `block` (rows, cols), e.g. (1, 4), groups the two innermost dims where it divides them and
    stores fewer bytes than single elements."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils

    from edgecompress.exporters.tflite_float_ops import new_operator

    raw = Path(src).read_bytes()
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(raw))
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}

    def kind_of(op: Any) -> str:
        code = model.operatorCodes[op.opcodeIndex]
        return names.get(flatbuffer_utils.get_builtin_code_from_operator_code(code), "")

    users: dict[int, int] = {}
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            users[tensor.buffer] = users.get(tensor.buffer, 0) + 1
    encoded: list[EncodedTensor] = []
    skipped: list[str] = []
    for graph in model.subgraphs:
        producer = {
            int(t): op for op in graph.operators for t in (op.outputs if op.outputs is not None else [])
        }
        readers: dict[int, list[tuple[str, Any]]] = {}
        for op in graph.operators:
            for t in op.inputs if op.inputs is not None else []:
                readers.setdefault(int(t), []).append((kind_of(op), op))
        densify: list[Any] = []
        seen: set[int] = set()
        for op in graph.operators:
            kind = kind_of(op)
            if kind not in WEIGHT_OPS or op.inputs is None or len(op.inputs) < 2 or op.inputs[1] < 0:
                continue
            index = int(op.inputs[1])
            if index in producer and kind_of(producer[index]) == "DEQUANTIZE":
                index = int(producer[index].inputs[0])
            tensor = graph.tensors[index]
            values = _constant(model, tensor)
            if values is None or index in seen:
                continue
            seen.add(index)
            name = _name(tensor)
            problem = "already sparse" if tensor.sparsity is not None else None
            problem = problem or _unsupported(graph, tensor, index, readers.get(index, []))
            zeros = float(np.mean(values == 0)) if values.size else 0.0
            if problem is None and zeros < min_sparsity:
                problem = f"{zeros:.0%} zeros < min_sparsity {min_sparsity:.0%}"
            if problem is None and users[tensor.buffer] > 1:
                problem = "its buffer is shared with another tensor"
            if problem is None and len(tensor.shape) < 2:
                problem = f"rank {len(tensor.shape)}"
            if problem is not None:
                skipped.append(f"{name}: {problem}")
                continue
            shape = [int(d) for d in tensor.shape]
            options = [(1, 1)]
            if block is not None and shape[-2] % block[0] == 0 and shape[-1] % block[1] == 0:
                options.insert(0, (int(block[0]), int(block[1])))
            best: tuple[int, tuple[int, int], np.ndarray, Any] | None = None
            for option in options:
                data, segments, indices = _csr(values.reshape(shape), option)
                size = data.nbytes + _index_vector(segments)[1].values.nbytes
                size += _index_vector(indices)[1].values.nbytes
                if best is None or size < best[0]:
                    best = (size, option, data, _sparsity(shape, option, segments, indices))
            assert best is not None
            size, option, data, params = best
            if size + OVERHEAD + len(name) >= values.nbytes:
                skipped.append(
                    f"{name}: sparse {size} B + ~{OVERHEAD + len(name)} B of tables >= {values.nbytes} B"
                )
                continue
            twin = copy.deepcopy(tensor)  # the dense weight DENSIFY writes: same type, shape and quantization
            twin.name, twin.buffer = f"{name}_densified", 0
            graph.tensors.append(twin)
            twin_index = len(graph.tensors) - 1
            for user in graph.operators:
                if user.inputs is not None:
                    user.inputs = [twin_index if t == index else t for t in user.inputs]
            model.buffers[tensor.buffer].data = np.frombuffer(data.tobytes(), dtype=np.uint8)
            tensor.sparsity = params
            densify.append(new_operator(model, fb.BuiltinOperator.DENSIFY, [index], [twin_index]))
            dtype = ENCODABLE[tensor.type]
            encoded.append(EncodedTensor(name, kind, dtype, shape, zeros, values.nbytes, size, option))
        graph.operators[0:0] = densify
    content = bytes(flatbuffer_utils.convert_object_to_bytearray(model)) if encoded else raw
    Path(dst).write_bytes(content)
    return SparseEncoding(Path(dst), encoded, len(raw), len(content), skipped)
