"""Run artifacts with the plain runtime APIs, no edgecompress code: what an app outside the tool would do."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def litert_logits(path: Path, x: np.ndarray) -> np.ndarray:
    """Logits of a .tflite for each image of x, through ai_edge_litert's Interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=2)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    rows = []
    for i in range(len(x)):
        interpreter.set_tensor(inp["index"], x[i : i + 1])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(out["index"])[0].copy())
    return np.stack(rows)


def openvino_logits(path: Path, x: np.ndarray) -> np.ndarray:
    """Logits of an OpenVINO IR for each image of x, computing in f32 (not the CPU's default bf16 on AMX)."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    return np.stack([request.infer({0: x[i : i + 1]})[compiled.outputs[0]][0].copy() for i in range(len(x))])
