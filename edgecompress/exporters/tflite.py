"""TFLite (LiteRT) export: a `.tflite` flatbuffer run by LiteRT's Interpreter (XNNPACK on CPU).

```yaml
export:
  - {format: tflite, precision: fp32}   # tflite-fp32.tflite + tflite-fp32.json
  - {format: tflite, precision: fp16}   # weights stored as float16, computed in float32
```
"""

from __future__ import annotations

from typing import ClassVar

from edgecompress.exporters.base import Exporter


class TFLiteExporter(Exporter):
    """Torch models go through litert-torch; fp16 casts the weights with ai-edge-quantizer afterwards."""

    name: ClassVar[str] = "tflite"
    runtime: ClassVar[str] = "litert"
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16")
    backends: ClassVar[dict[str, str]] = {"torch": "edgecompress.exporters.torch_backend:export_tflite"}
