"""Torch backend of `quantize`: PT2E quantization with litert-torch's PT2EQuantizer (LiteRT's int8 scheme).

Flow: `torch.export` the model (batch dimension dynamic) -> `prepare_pt2e` (PTQ) or `prepare_qat_pt2e` (QAT)
from `torchao.quantization.pt2e`, annotated by litert-torch's `PT2EQuantizer` with its symmetric
per-channel config (int8 weights symmetric per output channel, int8 activations per tensor) -> observe
the calibration images -> QAT only: fine-tune with fake quantization through `TorchAdapter.fit` (the
distillation loss of the `distill` stage), observers and BatchNorm statistics optionally frozen after N
epochs -> `convert_pt2e(fold_quantize=False)`: a graph of float ops between quantize/dequantize pairs,
BatchNorm folded into the convs. That graph is what litert-torch lowers to an int8 .tflite (it asks for
unfolded weight quantize ops) and what OpenVINO reads as FakeQuantize ops, so both int8 artifacts come
from one set of scales.

The result is a `PT2EModule`, an `nn.Module` around the graph, so the pipeline keeps using it like any
torch model (predict, stats, copy, save, export).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from edgecompress.errors import ModelError, RecipeError
from edgecompress.exporters.conversion import native_stderr_captured
from edgecompress.frameworks.torch_loading import one_line
from edgecompress.stages.quantize.stage import (
    ACTIVATION_SCHEME,
    WEIGHT_SCHEME,
    calibration_images,
    qat_fit_options,
)
from edgecompress.stages.quantize.torch_annotation import make_quantizer

if TYPE_CHECKING:
    from edgecompress.context import RunContext
    from edgecompress.stages.quantize.stage import QuantizeConfig

#: Ops whose weights PT2EQuantizer quantizes.
WEIGHT_OPS = (torch.ops.aten.conv1d.default, torch.ops.aten.conv2d.default, torch.ops.aten.linear.default)
CALIBRATION_BATCH = 64


@dataclass(frozen=True)
class TorchQuantization:
    """What `quantize` leaves in `ctx.quantization` for the int8 exporters."""

    #: litert_torch.quantize.quant_config.QuantConfig: tells litert-torch to lower the q/dq pairs to int8 ops.
    quant_config: Any
    mode: str
    #: Modules kept float (keep_float matches), by name.
    float_layers: tuple[str, ...]


class PT2EModule(nn.Module):
    """A PT2E graph (prepared or converted) that behaves like an ordinary module.

    An exported graph cannot be put in train/eval mode by itself; `train(mode)` here switches its
    BatchNorm/dropout patterns (torchao's `move_exported_model_to_train/eval`) and, in a prepared graph,
    turns the observers on in train mode and off in eval mode, so evaluating never moves the ranges.
    Frozen observers and BatchNorm statistics stay frozen.
    """

    def __init__(self, graph_module: torch.fx.GraphModule) -> None:
        super().__init__()
        self.graph_module = graph_module
        self.observers_frozen = False
        self.bn_frozen = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The graph's output for a batch of inputs."""
        return self.graph_module(x)

    def train(self, mode: bool = True) -> PT2EModule:
        from torchao.quantization.pt2e import (
            disable_observer,
            enable_observer,
            move_exported_model_to_eval,
            move_exported_model_to_train,
        )

        if mode:
            move_exported_model_to_train(self.graph_module)
            if self.bn_frozen:
                _freeze_batchnorm(self.graph_module)
        else:
            move_exported_model_to_eval(self.graph_module)
        self.graph_module.apply(enable_observer if mode and not self.observers_frozen else disable_observer)
        for m in self.modules():  # flags only: GraphModule.train itself refuses to run
            m.training = mode
        return self

    def freeze_observers(self) -> None:
        """Stop updating scales and zero points (they keep their current values)."""
        from torchao.quantization.pt2e import disable_observer

        self.observers_frozen = True
        self.graph_module.apply(disable_observer)

    def freeze_batchnorm(self) -> None:
        """Normalise with the running statistics and stop updating them, also in train mode."""
        self.bn_frozen = True
        _freeze_batchnorm(self.graph_module)


def _freeze_batchnorm(gm: torch.fx.GraphModule) -> None:
    """Set the `training` argument of every batch_norm op to False (torchao's QAT tutorial does the same)."""
    ops = {torch.ops.aten.batch_norm.default, torch.ops.aten._native_batch_norm_legit.default}
    changed = False
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in ops and node.args[5] is True:
            args = list(node.args)
            args[5] = False
            node.args = tuple(args)
            changed = True
    if changed:
        gm.recompile()


@contextmanager
def _fold_only_present_conv_kinds(gm: torch.fx.GraphModule) -> Iterator[None]:
    """While inside, torchao's QAT conv-BN folding skips the conv kinds the graph does not have.

    `convert_pt2e` folds BatchNorm into conv1d, conv2d, conv_transpose1d and conv_transpose2d in turn, tracing
    24 patterns with torch.export for each kind, present or not (about 10 s on two cores); a kind absent
    from the graph cannot match, so its patterns are not traced.
    """
    from torchao.quantization.pt2e import qat_utils

    helper = getattr(qat_utils, "_fold_conv_bn_qat_helper", None)
    present = {
        str(n.target).split(".")[1]
        for n in gm.graph.nodes
        if n.op == "call_function" and str(n.target).startswith("aten.conv")
    }
    if helper is None or not present <= {"conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d"}:
        yield  # another torchao, or conv ops of another form: fold as torchao does
        return

    def fold(m: Any, conv_fn: Any, *args: Any, **kwargs: Any) -> Any:
        return helper(m, conv_fn, *args, **kwargs) if conv_fn.__name__ in present else m

    from unittest import mock

    with mock.patch.object(qat_utils, "_fold_conv_bn_qat_helper", fold):
        yield


def match_keep_float(model: nn.Module, patterns: list[str]) -> tuple[str, ...]:
    """Names of the modules the globs match (a match's submodules are implied). RecipeError naming every
    glob that matches no module, with some module names to choose from."""
    names = [n for n, _ in model.named_modules() if n]
    matched: list[str] = []
    unmatched = []
    for pattern in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            unmatched.append(pattern)
        matched.extend(h for h in hits if h not in matched)
    if unmatched:
        top = sorted({n.split(".")[0] for n in names})
        leaves = [n for n, m in model.named_modules() if n and not list(m.children())]
        raise RecipeError(
            f"quantize.keep_float: {', '.join(repr(p) for p in unmatched)} "
            f"match{'es' if len(unmatched) == 1 else ''} no module of the model; top-level modules: "
            f"{', '.join(top)}; layers: {', '.join(leaves[:12])}{' ...' if len(leaves) > 12 else ''}"
        )
    # A name inside another kept name adds nothing; report the outermost ones.
    return tuple(n for n in matched if not any(n.startswith(f"{o}.") for o in matched if o != n))


def _export(model: nn.Module, ctx: RunContext, *, train: bool) -> torch.fx.GraphModule:
    """torch.export with a dynamic batch (BatchNorm in training form for QAT), as a GraphModule."""
    shape = ctx.input_shape
    model.train(train)
    try:
        batch = torch.export.Dim("batch", min=1, max=65536)
        program = torch.export.export(model, (torch.zeros([2, *shape[1:]]),), dynamic_shapes=({0: batch},))
    except Exception as exc:
        raise ModelError(
            f"quantize: torch.export failed for input shape {[2, *shape[1:]]} with a dynamic batch: "
            f"{one_line(exc)}"
        ) from exc
    finally:
        model.eval()
    return program.module()


def _observe(model: PT2EModule, images: np.ndarray) -> None:
    """Run the calibration images through the prepared graph with observers on and BatchNorm in eval form."""
    from torchao.quantization.pt2e import enable_observer, move_exported_model_to_eval

    move_exported_model_to_eval(model.graph_module)
    model.graph_module.apply(enable_observer)
    with torch.no_grad():
        for i in range(0, len(images), CALIBRATION_BATCH):
            model(torch.from_numpy(images[i : i + CALIBRATION_BATCH]))


@contextmanager
def _zeros_kept(model: nn.Module) -> Iterator[int]:
    """Gradients of exactly-zero weights (sparsity from earlier stages) are masked while inside, so adamw
    and sgd leave them zero; yields how many weights are held at zero."""
    handles = []
    held = 0
    for p in model.parameters():
        if p.ndim > 1 and p.requires_grad:
            mask = p.detach() != 0
            zeros = int((~mask).sum())
            if zeros:
                held += zeros
                # the mask follows the gradient to the device `fit` trains on
                handles.append(p.register_hook(lambda g, m=mask: g * m.to(g.device)))
    try:
        yield held
    finally:
        for h in handles:
            h.remove()


def count_weight_ops(gm: torch.fx.GraphModule) -> tuple[int, int]:
    """In a converted graph: (conv/linear ops with dequantized int8 weights, those with float weights)."""
    dq = {torch.ops.quantized_decomposed.dequantize_per_channel.default}
    dq |= {torch.ops.quantized_decomposed.dequantize_per_tensor.default}
    quantized = floating = 0
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in WEIGHT_OPS:
            weight = node.args[1]
            if isinstance(weight, torch.fx.Node) and weight.target in dq:
                quantized += 1
            else:
                floating += 1
    return quantized, floating


def _report_float_fallbacks(ops: list[tuple[str, str]], ctx: RunContext) -> None:
    """Note and warn about the ops the quantizer could not make int8 (never a silent float fallback)."""
    ctx.note("float_fallback_ops", [f"{op} at {where or 'top level'}" for op, where in ops])
    if not ops:
        return
    counts: dict[str, list[str]] = {}
    for op, where in ops:
        counts.setdefault(op, []).append(where or "top level")
    listed = "; ".join(
        f"{op} x{len(places)} ({', '.join(places[:3])}{', ...' if len(places) > 3 else ''})"
        for op, places in counts.items()
    )
    ctx.ui.warn(
        f"quantize: {len(ops)} op(s) have no int8 pattern in the quantizer and stay float: {listed}. Each runs "
        "between a dequantize and a quantize (DEQUANTIZE/QUANTIZE in the .tflite, f32 in OpenVINO); replace "
        "them by int8-friendly ops (e.g. ReLU/ReLU6 for SiLU/GELU/Hardswish) or list their layers in keep_float"
    )


def _accuracy(ctx: RunContext, model: Any) -> float:
    val = ctx.data.val if len(ctx.data.val) else ctx.data.test
    return ctx.adapter.accuracy(model, val)


def quantize(model: Any, config: QuantizeConfig, ctx: RunContext) -> PT2EModule:
    """Quantize `model` as `config` says and return the converted int8 graph (in eval mode).

    Sets `ctx.quantization` (TorchQuantization) and records in the run notes: mode, schemes, calibration
    images, epochs, freezing, the layers kept float, the number of conv/linear ops quantized and kept
    float, validation accuracy before and after, and the zero weights held at zero through QAT.
    """
    if isinstance(model, PT2EModule) or ctx.quantization is not None:
        raise RecipeError("quantize: the model is already quantized; give one 'quantize' stage")
    if isinstance(model, torch.jit.ScriptModule):
        raise ModelError("quantize: TorchScript models cannot be quantized (PT2E needs torch.export)")
    float_layers = match_keep_float(model, config.keep_float)
    images = calibration_images(ctx, config.calibration_samples)
    qat = config.mode == "qat"
    ctx.note("mode", config.mode)
    ctx.note("weights", WEIGHT_SCHEME)
    ctx.note("activations", ACTIVATION_SCHEME)
    ctx.note("calibration_samples", len(images))
    ctx.note("keep_float", list(float_layers))
    val_before = _accuracy(ctx, model)

    # torchao and litert-torch log to fd 2 on import and while tracing; kept off the console (shown with -vv).
    with native_stderr_captured(ctx.ui):
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e, prepare_qat_pt2e

        quantizer = make_quantizer(qat=qat, float_layers=float_layers)
        graph = _export(ctx.adapter.copy(model), ctx, train=qat)
        try:
            prepared = PT2EModule(
                prepare_qat_pt2e(graph, quantizer) if qat else prepare_pt2e(graph, quantizer)
            )
        except Exception as exc:
            raise ModelError(
                f"quantize: inserting the quantization observers failed: {one_line(exc)}"
            ) from exc
        _observe(prepared, images)
    if qat:
        prepared = _fine_tune(prepared, model, config, ctx)
    with native_stderr_captured(ctx.ui):
        prepared.freeze_observers()
        prepared.eval()
        try:
            with _fold_only_present_conv_kinds(prepared.graph_module):
                converted = convert_pt2e(prepared.graph_module, fold_quantize=False)
        except Exception as exc:
            raise ModelError(f"quantize: converting to the int8 graph failed: {one_line(exc)}") from exc
        result = PT2EModule(converted).eval()

    _report_float_fallbacks(quantizer.float_fallbacks, ctx)
    ctx.quantization = TorchQuantization(
        quant_config=QuantConfig(pt2e_quantizer=quantizer),
        mode=config.mode,
        float_layers=float_layers,
    )
    quantized_ops, float_ops = count_weight_ops(converted)
    if quantized_ops == 0:
        raise ModelError("quantize: no conv or linear layer was quantized (keep_float covers them all?)")
    ctx.note("quantized_weight_ops", quantized_ops)
    ctx.note("float_weight_ops", float_ops)
    ctx.note("val_accuracy_float", round(val_before, 4))
    ctx.note("val_accuracy_int8", round(_accuracy(ctx, result), 4))
    return result


def _fine_tune(prepared: PT2EModule, float_model: Any, config: QuantizeConfig, ctx: RunContext) -> PT2EModule:
    """QAT: train the prepared graph with fake quantization through the adapter's loop (distillation loss
    when `config.distill`), freezing observers / BatchNorm statistics at the start of the given epochs."""

    def on_epoch_start(epoch: int, model: Any) -> None:
        if config.freeze_observers_after is not None and epoch >= config.freeze_observers_after:
            model.freeze_observers()
        if config.freeze_bn_after is not None and epoch >= config.freeze_bn_after:
            model.freeze_batchnorm()

    options = qat_fit_options(config, ctx, float_model, on_epoch_start=on_epoch_start)
    if config.freeze_observers_after is not None:
        ctx.note("observers_frozen_after_epoch", config.freeze_observers_after)
    if config.freeze_bn_after is not None:
        ctx.note("batchnorm_frozen_after_epoch", config.freeze_bn_after)
    with _zeros_kept(prepared) as held:
        prepared = ctx.adapter.fit(prepared, ctx.data, options, seed=ctx.seed, ui=ctx.ui)
    if held:
        ctx.note("zero_weights_kept", held)
    return prepared
