"""What a user can do without edgecompress: the stock tools chained by hand.

- `hand_prune`: Torch-Pruning as its README shows it (uniform ratio, L1 magnitude, classifier left alone).
- `plain_finetune`: cross-entropy fine-tuning (AdamW, per-step cosine, batch 64, no augmentation, no teacher).
- `stock_litert_int8`: litert-torch's documented PT2E PTQ (PT2EQuantizer, symmetric per-channel,
  prepare_pt2e / convert_pt2e, `litert_torch.convert(quant_config=...)`).
- `stock_openvino_int8`: `nncf.quantize` with its defaults on the fp32 IR.

And `export_fp32`, the fp32 artifacts through edgecompress's exporters (the unpruned reference).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np


def artifact_for(path: Path, runtime: str, precision: str, shape: list[int]) -> Any:
    """An artifact made by a stock tool, described as edgecompress's runner needs it."""
    from edgecompress.exporters.base import artifact_from_file

    # the same f32 hint edgecompress's OpenVINO artifacts carry, so all sides compute alike
    hint = "f32" if runtime == "openvino" else None
    update = {"precision": precision, "input_shape": shape, "layout": "NCHW", "inference_precision": hint}
    return artifact_from_file(path).model_copy(update=update)


def stock_litert_int8(model: Any, calibration: np.ndarray, path: Path) -> Any:
    """litert-torch's documented PT2E PTQ. litert-torch gives the model int8 input/output tensors; they are
    put behind float32 ones (QUANTIZE/DEQUANTIZE, same arithmetic) so the artifact takes the same float
    images as every other one. Note: with torch 2.13's default (non-strict) torch.export, this quantizer
    leaves residual adds and concatenations in float (see edgecompress's restore_source_functions)."""
    import litert_torch
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from edgecompress.exporters.tflite_int8 import float_interface

    sample = torch.from_numpy(calibration[:1])
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    graph = torch.export.export(model.eval(), (sample,)).module()
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for i in range(len(calibration)):
            prepared(torch.from_numpy(calibration[i : i + 1]))
    converted = convert_pt2e(prepared, fold_quantize=False)
    content = litert_torch.convert(
        converted, (sample,), quant_config=QuantConfig(pt2e_quantizer=quantizer)
    ).model_content()
    content, _ = float_interface(content)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return artifact_for(path, "litert", "int8", list(sample.shape))


def stock_openvino_int8(model: Any, calibration: np.ndarray, path: Path) -> Any:
    """The fp32 IR (ov.convert_model of the torch.export program) quantized by nncf.quantize (defaults) on
    the calibration images."""
    import nncf
    import openvino as ov
    import torch

    sample = torch.from_numpy(calibration[:1])
    with torch.no_grad():
        program = torch.export.export(model.eval(), (sample,))
    ov_model = ov.convert_model(program, input=[ov.PartialShape(list(sample.shape))])
    dataset = nncf.Dataset([calibration[i : i + 1] for i in range(len(calibration))])
    quantized = nncf.quantize(ov_model, dataset, subset_size=len(calibration))
    path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(path), compress_to_fp16=False)
    return artifact_for(path, "openvino", "int8", list(sample.shape))


def stock_int8(model: Any, calibration: np.ndarray, out_dir: Path, name: str) -> dict[str, Any]:
    """Both stock int8 artifacts of `model`, by runtime."""
    return {
        "litert": stock_litert_int8(model, calibration, out_dir / f"{name}-stock-int8.tflite"),
        "openvino": stock_openvino_int8(model, calibration, out_dir / f"{name}-stock-int8.xml"),
    }


def export_fp32(model: Any, ctx: Any, out_dir: Path) -> dict[str, Any]:
    """fp32 TFLite and OpenVINO artifacts through edgecompress's exporters, by runtime."""
    from edgecompress.recipe import ExportSpec
    from edgecompress.registry import EXPORTERS

    out = {}
    for fmt in ("tflite", "openvino"):
        spec = ExportSpec(format=fmt, precision="fp32")
        artifact = EXPORTERS.get(fmt)().export(model, spec, ctx, out_dir)
        out[artifact.runtime] = artifact
    return out


def hand_prune(model: Any, ratio: float, shape: list[int], classifier: Any) -> None:
    """Torch-Pruning as its README shows it: uniform ratio, L1 magnitude, the classifier left alone."""
    import torch
    import torch_pruning as tp

    pruner = tp.pruner.BasePruner(
        model,
        torch.zeros(shape),
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=ratio,
        ignored_layers=[classifier],
    )
    pruner.step()


def plain_finetune(model: Any, data: Any, *, epochs: int, lr: float, seed: int) -> list[float]:
    """Cross-entropy training on the training split (AdamW, weight decay 1e-4, per-step cosine to 0, batch 64,
    no augmentation, the last epoch's weights); returns seconds per epoch."""
    import torch
    from torch.nn import functional as F

    x = torch.from_numpy(np.ascontiguousarray(data.train.x, dtype=np.float32))
    y = torch.from_numpy(data.train.y.astype(np.int64))
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = max(epochs * math.ceil(len(x) / 64), 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    gen = torch.Generator().manual_seed(seed)
    seconds = []
    for _ in range(epochs):
        t = time.perf_counter()
        model.train()
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            idx = order[i : i + 64]
            if len(idx) < 2:
                break
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
        seconds.append(time.perf_counter() - t)
    model.eval()
    return seconds
