"""TFLite (LiteRT) export: a `.tflite` flatbuffer run by LiteRT's Interpreter (XNNPACK on CPU).

```yaml
export:
  - {format: tflite, precision: fp32}   # tflite-fp32.tflite + tflite-fp32.json
  - {format: tflite, precision: fp16}   # weights stored as float16, computed in float32
  - {format: tflite, precision: int8}   # the `quantize` stage's int8 model; needs that stage
  - {format: tflite, precision: fp32, options: {sparse_weights: off}}  # a sparse model's zeros stored dense
```

After a pattern-sparsity `prune` stage, weights with many zeros are stored in TFLite's sparse format (CSR
behind a DENSIFY op, unpacked once at load) where the runtime loads that (fp32, fp16, int8 convs; not int8
fully-connected, which XNNPACK cannot prepare), and only when the file's outputs equal the dense file's. On
ARM64 XNNPACK may then run fp32/fp16 1x1 convs with more than 2/3 zeros with its sparse kernels; on x86 it
unpacks them and runs the dense kernels.

int8 lowers the quantized graph to int8 TFLite ops (int8 weights per channel, int8 activations per tensor,
XNNPACK's int8 kernels) with float32 input and output: a QUANTIZE op in front and a DEQUANTIZE op behind, as
TensorFlow's converter does, so the artifact is fed like the float ones.
"""

from __future__ import annotations

from typing import ClassVar

from edgecompress.exporters.base import Exporter


class TFLiteExporter(Exporter):
    """Torch models go through litert-torch; fp16 casts the weights with ai-edge-quantizer afterwards; int8
    hands litert-torch the quantize stage's QuantConfig."""

    name: ClassVar[str] = "tflite"
    runtime: ClassVar[str] = "litert"
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16", "int8")
    #: sparse_weights auto (default): a sparse model's weights with >= 30% zeros are stored in TFLite's sparse
    #: format behind DENSIFY ops where the runtime loads them (exporters/tflite_sparse.py), kept only when the
    #: file gives the same outputs; off: dense tensors as litert-torch writes them.
    options: ClassVar[dict[str, tuple[str, ...] | None]] = {"sparse_weights": ("auto", "off")}
    backends: ClassVar[dict[str, str]] = {
        "torch": "edgecompress.exporters.torch_backend:export_tflite",
        "keras": "edgecompress.exporters.keras_backend:export_tflite",
    }
