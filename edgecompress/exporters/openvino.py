"""OpenVINO IR export: `<name>.xml` (graph) + `<name>.bin` (weights), run by the OpenVINO CPU plugin.

```yaml
export:
  - {format: openvino, precision: fp32}   # openvino-fp32.xml/.bin + openvino-fp32.json
  - {format: openvino, precision: fp16}   # weights compressed to float16 (decompressed at load)
  - {format: openvino, precision: fp32, options: {inference_precision: bf16}}
  - {format: openvino, precision: int8}   # the `quantize` stage's int8 model; needs that stage
```

`inference_precision` (default `f32`) is the CPU plugin's INFERENCE_PRECISION_HINT the artifact is verified
and profiled with, and that the sidecar tells an app to set. Without it, OpenVINO computes float models in
bf16 on CPUs with AMX/AVX512-BF16, which changes results (seen here: top-1 agreement 0.986 on a small
digits CNN); `auto` leaves the choice to the plugin.

int8 is the quantize stage's graph read by `ov.convert_model`: its quantize/dequantize pairs become
FakeQuantize ops (weights stored as int8 constants), and the CPU plugin's low-precision transformations run
the quantized convolutions and matmuls as int8 kernels whatever the hint. The hint (default `f32` here too)
governs only what stays float: layers kept float (`keep_float`), the dequantized output and ops between
quantized ones. f32 keeps those exactly as the quantized torch model computes them, so parity measures the
int8 arithmetic alone; bf16 would add its own rounding on AMX/AVX512-BF16 CPUs for little speed, as the
heavy ops are int8 already.
"""

from __future__ import annotations

from typing import ClassVar

from edgecompress.exporters.base import Exporter


class OpenVINOExporter(Exporter):
    """Torch models go through `ov.convert_model`; fp16 is `ov.save_model(compress_to_fp16=True)`; int8 is the
    quantized graph, FakeQuantize ops and all."""

    name: ClassVar[str] = "openvino"
    runtime: ClassVar[str] = "openvino"
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16", "int8")
    options: ClassVar[dict[str, tuple[str, ...] | None]] = {
        "inference_precision": ("f32", "bf16", "f16", "auto")
    }
    backends: ClassVar[dict[str, str]] = {
        "torch": "edgecompress.exporters.torch_backend:export_openvino",
        "keras": "edgecompress.exporters.keras_backend:export_openvino",
    }
