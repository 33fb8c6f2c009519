"""Where an int8 artifact departs from its torch graph: every quantized tensor compared, layer by layer.

When an int8 artifact's top-1 agreement with its quantized torch model is under the parity threshold, the
last layer is too late to look: this runs both on a few images and compares every int8 activation. A torch
quantize node and a runtime tensor are matched by their quantization (scale and zero point, which the
exporters carry over verbatim) and size; the values are compared in units of that scale (int8 steps). Rounding
differs between kernels by one step at most; a layer whose tensors differ by more, where its inputs did not,
is where the runtime computes something else (a wrong layout, a fused activation torch does not have, a
scale the converter changed).

    layers = compare_layers(torch_module, artifact_path, runtime, images)
    first = first_divergent(layers)  # LayerDiff of the earliest layer off by more than a step, or None
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Steps of int8 difference that rounding explains: a kernel rounds differently from torch by one step, and
#: a layer reading inputs one step off can be a few steps off itself (measured: up to 5 at a linear head
#: over a mean, where the inputs differed by one step).
TOLERATED_STEPS = 8.0
#: Share of a tensor's elements that may exceed TOLERATED_STEPS before the layer counts as divergent.
TOLERATED_SHARE = 0.01


@dataclass(frozen=True)
class LayerDiff:
    """One quantized tensor of the torch graph against the runtime's tensor with the same quantization."""

    node: str  # the torch op whose output is quantized
    module: str
    op: str
    scale: float
    max_steps: float  # largest |difference| in int8 steps
    share_off: float  # share of elements differing by more than TOLERATED_STEPS
    matched: bool  # whether the runtime has a tensor with this quantization

    @property
    def divergent(self) -> bool:
        return self.matched and self.share_off > TOLERATED_SHARE

    def describe(self) -> str:
        where = f"{self.op} at {self.module or 'top level'} ({self.node})"
        if not self.matched:
            return f"{where}: no tensor with its scale in the artifact"
        return (
            f"{where}: {self.share_off:.1%} of values differ by more than {TOLERATED_STEPS:.0f} int8 steps "
            f"(max {self.max_steps:.0f})"
        )


def _torch_quantized_tensors(module: Any, images: np.ndarray) -> list[tuple[Any, np.ndarray]]:
    """(quantize node, its int8 output for every image stacked) in graph order."""
    import torch

    gm = module.graph_module
    q = torch.ops.quantized_decomposed.quantize_per_tensor.default
    wanted = [n for n in gm.graph.nodes if n.target == q]
    outputs: dict[Any, list[np.ndarray]] = {n: [] for n in wanted}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            result = super().run_node(n)
            if n in outputs:
                outputs[n].append(result.detach().numpy().copy())
            return result

    with torch.no_grad():
        for i in range(len(images)):
            Recorder(gm).run(torch.from_numpy(images[i : i + 1]))
    return [(n, np.concatenate(outputs[n])) for n in wanted]


def _litert_tensors(path: Path, images: np.ndarray) -> list[tuple[float, int, np.ndarray]]:
    """(scale, zero point, int8 values of every image stacked) of every int8 tensor of a .tflite."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    details = [
        d
        for d in interpreter.get_tensor_details()
        if d["dtype"] == np.int8 and len(d["quantization_parameters"]["scales"]) == 1
    ]
    values: dict[int, list[np.ndarray]] = {d["index"]: [] for d in details}
    index = interpreter.get_input_details()[0]["index"]
    for i in range(len(images)):
        interpreter.set_tensor(index, images[i : i + 1].astype(np.float32))
        interpreter.invoke()
        for d in details:
            try:
                value = interpreter.get_tensor(d["index"]).copy()
            except ValueError:  # a tensor the interpreter does not keep
                continue
            if value.ndim > 0 and value.shape[0] == 1:  # activations (batch 1), not constants
                values[d["index"]].append(value)
    out = []
    for d in details:
        if len(values[d["index"]]) == len(images):
            q = d["quantization_parameters"]
            out.append((float(q["scales"][0]), int(q["zero_points"][0]), np.concatenate(values[d["index"]])))
    return out


def _openvino_tensors(path: Path, images: np.ndarray) -> list[tuple[float, int, np.ndarray]]:
    """(scale, zero point, int8 steps of every image stacked) at every FakeQuantize of an OpenVINO IR: the IR
    gets an extra output per FakeQuantize (read in f32, so the plugin computes them as the model does)."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    fakes = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "FakeQuantize" or int(op.get_attributes().get("levels", 0)) != 256:
            continue
        bounds = [op.input_value(i).get_node() for i in (3, 4)]
        if not all(b.get_type_name() == "Constant" for b in bounds):
            continue
        low, high = (float(np.asarray(b.get_data()).reshape(-1)[0]) for b in bounds)
        scale = (high - low) / 255.0
        if scale <= 0 or op.get_output_partial_shape(0).is_dynamic:
            continue
        fakes.append((op, scale, round(-128 - low / scale)))
    if not fakes:
        return []
    model.add_outputs([op.output(0) for op, _, _ in fakes])
    # the model's results in order, each by the op it reads (compiled outputs follow the results' order)
    reading = {
        result.input_value(0).get_node().get_friendly_name(): i
        for i, result in enumerate(model.get_results())
    }
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    ports = [compiled.outputs[reading[op.get_friendly_name()]] for op, _, _ in fakes]
    values: list[list[np.ndarray]] = [[] for _ in fakes]
    for i in range(len(images)):
        request.infer({0: images[i : i + 1].astype(np.float32)})
        for k, (_, scale, zero) in enumerate(fakes):
            real = np.asarray(request.get_tensor(ports[k]).data)
            values[k].append(np.round(real / scale) + zero)
    return [(scale, zero, np.concatenate(v)) for (_, scale, zero), v in zip(fakes, values, strict=True)]


def _alignments(values: np.ndarray, shape: tuple[int, ...]) -> list[np.ndarray]:
    """`values` (a runtime tensor, NHWC or NCHW) laid out as `shape` (torch's NCHW) every way it can be."""
    out = []
    if values.ndim == 4 and len(shape) == 4 and values.shape == (shape[0], shape[2], shape[3], shape[1]):
        out.append(values.transpose(0, 3, 1, 2))
    if values.shape == shape:
        out.append(values)
    elif not out and values.size == int(np.prod(shape)):
        out.append(values.reshape(shape))
    return out


def compare_layers(module: Any, path: Path, runtime: str, images: np.ndarray) -> list[LayerDiff]:
    """Every quantized tensor of `module` (a converted PT2E graph) against the artifact at `path`, on
    `images` (a few suffice): LiteRT's int8 tensors (kept with experimental_preserve_all_tensors), OpenVINO's
    FakeQuantize outputs (made outputs of the IR for the comparison). Nothing for a model without a PT2E
    graph (a Keras int8 model is its .tflite: there is no other graph to compare with)."""
    if not hasattr(module, "graph_module"):
        return []
    torch_tensors = _torch_quantized_tensors(module, images)
    runtime_tensors = (
        _litert_tensors(path, images) if runtime == "litert" else _openvino_tensors(path, images)
    )
    diffs = []
    for node, values in torch_tensors:
        scale, zero_point = float(node.args[1]), int(node.args[2])
        producer = node.args[0]
        stack = producer.meta.get("nn_module_stack", {}) if hasattr(producer, "meta") else {}
        module_path = next(reversed(stack.values()))[0] if stack else ""
        parts = str(getattr(producer, "target", "input")).split(".")
        op = (
            "input"
            if getattr(producer, "op", "") == "placeholder"
            else (parts[-2] if len(parts) > 1 else parts[0])
        )
        best: tuple[float, float] | None = None
        for r_scale, r_zero, r_values in runtime_tensors:
            if r_zero != zero_point or not np.isclose(r_scale, scale, rtol=1e-6):
                continue
            for aligned in _alignments(r_values, values.shape):
                steps = np.abs(aligned.astype(np.float64) - values.astype(np.float64))
                candidate = (float((steps > TOLERATED_STEPS).mean()), float(steps.max()))
                if best is None or candidate < best:
                    best = candidate
        diffs.append(
            LayerDiff(
                node=getattr(producer, "name", str(producer)),
                module=module_path,
                op=op,
                scale=scale,
                max_steps=best[1] if best else 0.0,
                share_off=best[0] if best else 0.0,
                matched=best is not None,
            )
        )
    return diffs


def first_divergent(diffs: list[LayerDiff]) -> LayerDiff | None:
    """The earliest layer whose runtime tensor departs from torch's by more than kernel rounding."""
    return next((d for d in diffs if d.divergent), None)
