"""How `quantize` annotates a torch graph for int8: litert-torch's PT2EQuantizer (LiteRT's int8 scheme:
weights symmetric per output channel, activations per tensor), made to see what torch 2.13 hides from it,
plus the patterns it lacks, and a list of every op it still leaves float.

- `restore_source_functions`: adds, concats, ReLUs and pools get the `source_fn_stack` the stock
  annotators look for (non-strict `torch.export` no longer records it), so they are quantized too.
- `annotate_conv_relu6`: conv [-> BatchNorm] -> ReLU6 as one int8 op quantized after the clamp.
- `float_fallbacks`: the computing ops no pattern annotated (reported by the stage, never silent).
- `make_quantizer`: the quantizer that does all of the above, with `keep_float` layers left alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _module_pattern(
    pattern: Any, example_inputs: tuple[Any, ...], is_cuda: bool = False, **kwargs: Any
) -> Any:
    """torchao's pattern tracer, given a module: torchao 0.18 exports patterns with torch.export, which
    takes only modules, while litert-torch 0.10's conv-bn (QAT) annotator hands it a plain function."""
    from torchao.quantization.pt2e.export_utils import WrapperModule
    from torchao.quantization.pt2e.utils import _get_aten_graph_module_for_pattern

    module = pattern if isinstance(pattern, nn.Module) else WrapperModule(pattern)
    return _get_aten_graph_module_for_pattern(module, example_inputs, is_cuda, **kwargs)


def _source_functions() -> dict[Any, Any]:
    """aten op -> the torch function litert-torch's annotators look for in a node's `source_fn_stack`."""
    import operator

    from torch.nn import functional as F

    aten = torch.ops.aten
    return {
        aten.add.Tensor: operator.add,
        aten.mul.Tensor: operator.mul,
        aten.cat.default: torch.cat,
        aten.relu.default: F.relu,
        aten.relu_.default: F.relu,
        aten.hardtanh.default: F.hardtanh,
        aten.max_pool2d.default: F.max_pool2d,
        aten.adaptive_avg_pool2d.default: F.adaptive_avg_pool2d,
    }


def restore_source_functions(gm: torch.fx.GraphModule) -> int:
    """Give the graph's adds, muls, concats, ReLUs and pools the `source_fn_stack` that litert-torch's
    annotators match on; returns how many nodes got one.

    litert-torch 0.10 finds these ops with `get_source_partitions`, which reads `source_fn_stack`. Only
    strict (dynamo) `torch.export` records it; the default non-strict export records `torch_fn` instead,
    as a name string ('method_descriptor.add') that the add/cat/pool annotators do not compare against.
    Left like that, every residual add and concat stays float: the .tflite gets a DEQUANTIZE before and
    a QUANTIZE after each of them, and OpenVINO runs them in f32 between FakeQuantize ops; that made
    int8 MobileNetV2 slower than fp32. Only nodes with a `torch_fn` (a call in the model's code) and an
    out-of-place aten op get one (so BatchNorm's `num_batches_tracked` counter, an `add_`, is never taken
    for a residual add).
    """
    functions = _source_functions()
    restored = 0
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.meta.get("source_fn_stack"):
            continue
        function = functions.get(node.target)
        if function is None or not node.meta.get("torch_fn"):
            continue
        # keyed by the node's own (unique) name: torch_fn names repeat across calls ('relu_1' for both an
        # nn.ReLU and a torch.relu), and a shared key would merge two ops into one partition
        node.meta["source_fn_stack"] = [(node.name, function)]
        restored += 1
    return restored


def _is_relu6(node: torch.fx.Node) -> bool:
    aten = torch.ops.aten
    if node.op != "call_function" or node.target not in (aten.hardtanh.default, aten.hardtanh_.default):
        return False
    low = node.args[1] if len(node.args) > 1 else node.kwargs.get("min_val", -1.0)
    high = node.args[2] if len(node.args) > 2 else node.kwargs.get("max_val", 1.0)
    return float(low) == 0.0 and float(high) == 6.0


def annotate_conv_relu6(gm: torch.fx.GraphModule, config: Any, keep: Any) -> int:
    """Annotate conv [-> BatchNorm] -> ReLU6 as one int8 op whose output is quantized after the clamp;
    returns how many were annotated.

    litert-torch 0.10 fuses conv + ReLU into one quantized op but has no such pattern for ReLU6
    (hardtanh 0..6, MobileNet's activation): the conv output is quantized over its whole pre-activation
    range (e.g. -20..15) and the ReLU6 shares that scale, so the 0..6 that survive the clamp get a
    fraction of the 256 levels. Quantizing after the clamp, as TensorFlow's converter does for a fused
    RELU6, gives them all 256 (several times finer) and still lowers to one CONV_2D / DEPTHWISE_CONV_2D
    with a fused RELU6. The BatchNorm is there in QAT graphs (it is folded before annotation in PTQ).
    `keep(node)` False leaves a pattern alone (keep_float).
    """
    from litert_torch.quantize import pt2e_quantizer_utils as utils
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    aten = torch.ops.aten
    convs = (aten.conv1d.default, aten.conv2d.default, aten.convolution.default)
    norms = (aten.batch_norm.default, aten._native_batch_norm_legit.default)
    annotated = 0
    for act in gm.graph.nodes:
        if not _is_relu6(act) or not isinstance(act.args[0], torch.fx.Node):
            continue
        conv = act.args[0]
        chain = [act]
        if conv.target in norms and len(conv.users) == 1 and isinstance(conv.args[0], torch.fx.Node):
            chain.append(conv)
            conv = conv.args[0]
        if conv.op != "call_function" or conv.target not in convs or len(conv.users) != 1:
            continue
        weight = conv.args[1]
        bias = conv.args[2] if len(conv.args) > 2 else None
        partition = [*chain, conv, weight] + ([bias] if isinstance(bias, torch.fx.Node) else [])
        if utils._is_annotated(partition) or not all(keep(n) for n in partition):
            continue
        inputs = {conv.args[0]: utils.get_input_act_qspec(config), weight: utils.get_weight_qspec(config)}
        if isinstance(bias, torch.fx.Node):
            inputs[bias] = utils.get_bias_qspec(config)
        conv.meta["quantization_annotation"] = QuantizationAnnotation(input_qspec_map=inputs, _annotated=True)
        act.meta["quantization_annotation"] = QuantizationAnnotation(
            output_qspec=utils.get_output_act_qspec(config), _annotated=True
        )
        utils._mark_nodes_as_annotated(partition)
        annotated += 1
    return annotated


def _fixed(scale: float, zero_point: int) -> tuple[str, float, int]:
    return ("fixed", scale, zero_point)


def modern_op_rules() -> dict[Any, Any]:
    """aten op -> how `annotate_modern_ops` quantizes it (ops litert-torch 0.10 has no int8 pattern for).

    - "own": the activation input(s) and the output quantized, the output with its own observed range;
    - "shared": the output shares the input's scale (ops that only pad, pool or reduce values: TFLite's int8
      AVERAGE_POOL_2D and PAD need equal scales, and a shared scale costs no requantization);
    - ("fixed", scale, zero point): the output scale is fixed by the op's range, as TFLite's int8 kernels
      require (LOGISTIC and SOFTMAX 1/256 with zero point -128, TANH 1/128 with 0); hardsigmoid's output
      lies in [0, 1] like a sigmoid's, so it gets the same;
    - "binary": every activation input (and a constant operand) quantized, the output with its own range.
    """
    aten = torch.ops.aten
    unit = _fixed(1 / 256, -128)
    rules: dict[Any, Any] = {
        aten.hardswish.default: "own",
        aten.hardswish_.default: "own",
        aten.silu.default: "own",
        aten.silu_.default: "own",
        aten.gelu.default: "own",
        aten.relu.default: "own",
        aten.relu_.default: "own",
        aten.clamp.default: "own",
        aten.hardtanh.default: "own",
        aten.layer_norm.default: "own",
        aten.hardsigmoid.default: unit,
        aten.hardsigmoid_.default: unit,
        aten.sigmoid.default: unit,
        aten.sigmoid_.default: unit,
        aten.softmax.int: unit,
        aten._softmax.default: unit,
        aten.tanh.default: _fixed(1 / 128, 0),
        aten.mean.dim: "shared",
        aten.avg_pool2d.default: "shared",
        aten.adaptive_avg_pool2d.default: "shared",
        aten.pad.default: "shared",
        aten.constant_pad_nd.default: "shared",
        aten.sub.Tensor: "binary",
        aten.rsub.Scalar: "binary",
        aten.div.Tensor: "binary",
        aten.mul.Tensor: "binary",
        aten.add.Tensor: "binary",
        aten.matmul.default: "binary",
        aten.bmm.default: "binary",
    }
    return rules


def annotate_modern_ops(gm: torch.fx.GraphModule, config: Any, keep: Any) -> int:
    """Quantize the ops of modern mobile blocks that litert-torch 0.10's patterns leave float (see
    `modern_op_rules`): hardswish, hardsigmoid, SiLU, GELU, sigmoid and tanh (with fixed output scales),
    squeeze-excitation's mean and broadcast multiply, sub/div, average pools, pad, clamps, layer norm,
    matmul and softmax. Runs after the stock patterns, so an op they annotated is left as they did it;
    returns how many ops were annotated. `keep(node)` False leaves an op float (keep_float).

    What each runtime then does with an int8 op (a native int8 kernel, a slower one outside XNNPACK, a
    decomposition, or float for that op alone) is decided per export when the quantized graph is derived
    for it, by measurement; the quantized graph itself quantizes every op some runtime can run in int8.
    """
    from litert_torch.quantize import pt2e_quantizer_utils as utils
    from torchao.quantization.pt2e.quantizer import (
        FixedQParamsQuantizationSpec,
        QuantizationAnnotation,
        SharedQuantizationSpec,
    )

    rules = modern_op_rules()
    act_in = utils.get_input_act_qspec(config)
    act_out = utils.get_output_act_qspec(config)
    annotated = 0
    for node in gm.graph.nodes:
        rule = rules.get(node.target) if node.op == "call_function" else None
        if rule is None or utils._is_annotated([node]) or not keep(node):
            continue
        first = node.args[0] if node.args else None
        if isinstance(first, list | tuple) or not isinstance(first, torch.fx.Node):
            continue
        if rule == "binary":
            operands = [a for a in node.args[:2] if isinstance(a, torch.fx.Node)]
            inputs = {a: act_in for a in operands}
            output = act_out
        else:
            inputs = {first: act_in}
            if rule == "own":
                output = act_out
            elif rule == "shared":
                output = SharedQuantizationSpec((first, node))
            else:
                _, scale, zero_point = rule
                output = FixedQParamsQuantizationSpec(
                    dtype=torch.int8,
                    scale=scale,
                    zero_point=zero_point,
                    quant_min=-128,
                    quant_max=127,
                    qscheme=torch.per_tensor_affine,
                )
        node.meta["quantization_annotation"] = QuantizationAnnotation(
            input_qspec_map=inputs, output_qspec=output, _annotated=True
        )
        annotated += 1
    return annotated


def share_fixed_scales(gm: torch.fx.GraphModule) -> int:
    """Ops that read a fixed-scale output (a sigmoid's or hardsigmoid's 1/256, a tanh's 1/128) read it as it
    is; returns how many inputs were changed.

    Annotators ask for their inputs in the ordinary activation scheme; where the producer's output has a
    fixed scale, that is a second quantizer on the same tensor, and a requantization in the artifact (an
    extra QUANTIZE op in the .tflite between a squeeze-excitation gate and its multiply). Every int8 kernel
    that reads such a tensor takes any input scale, so the input shares the producer's.
    """
    from torchao.quantization.pt2e.quantizer import FixedQParamsQuantizationSpec, SharedQuantizationSpec

    changed = 0
    for node in gm.graph.nodes:
        annotation = node.meta.get("quantization_annotation")
        if annotation is None or not annotation.input_qspec_map:
            continue
        for arg, spec in list(annotation.input_qspec_map.items()):
            produced = arg.meta.get("quantization_annotation") if isinstance(arg, torch.fx.Node) else None
            if produced is None or not isinstance(produced.output_qspec, FixedQParamsQuantizationSpec):
                continue
            if spec is not produced.output_qspec and not isinstance(spec, SharedQuantizationSpec):
                annotation.input_qspec_map[arg] = SharedQuantizationSpec(arg)
                changed += 1
    return changed


#: aten ops that only move, reshape or alias data (int8 passes through them unchanged), and BatchNorm, which
#: is folded into the conv before it runs.
PASS_THROUGH_OPS = frozenset(
    {
        "view",
        "_unsafe_view",
        "reshape",
        "permute",
        "flatten",
        "squeeze",
        "unsqueeze",
        "clone",
        "contiguous",
        "expand",
        "t",
        "transpose",
        "dropout",
        "slice",
        "select",
        "alias",
        "detach",
        "_assert_tensor_metadata",
        "sym_size",
        "batch_norm",
        "_native_batch_norm_legit",
        "_native_batch_norm_legit_no_training",
    }
)


def _op_name(node: torch.fx.Node) -> str:
    schema = getattr(node.target, "_schema", None)
    return (
        schema.name.split("::")[-1]
        if schema is not None
        else getattr(node.target, "__name__", str(node.target))
    )


def float_fallbacks(gm: torch.fx.GraphModule, keep: Any) -> list[tuple[str, str]]:
    """(op, module path) of every computing op on the activations that no int8 pattern annotated and the
    recipe did not keep float on purpose (`keep(node)` False): the ops that will run in float between a
    dequantize and a quantize, i.e. a DEQUANTIZE/QUANTIZE pair in the .tflite and f32 nodes in OpenVINO."""
    activations: set[torch.fx.Node] = set()
    out = []
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            activations.add(node)
            continue
        if node.op != "call_function" or not any(a in activations for a in node.all_input_nodes):
            continue
        activations.add(node)
        name = _op_name(node)
        annotation = node.meta.get("quantization_annotation")
        if (
            name in PASS_THROUGH_OPS
            or name == "getitem"
            or (annotation is not None and annotation._annotated)
        ):
            continue
        if keep(node):
            stack = node.meta.get("nn_module_stack", {})
            out.append((name, next(reversed(stack.values()))[0] if stack else ""))
    return out


def make_quantizer(*, qat: bool, float_layers: tuple[str, ...]) -> Any:
    """litert-torch's PT2EQuantizer with its symmetric per-channel config; ops inside `float_layers`
    (module names) are left unannotated, so they stay float."""
    from litert_torch.quantize import pt2e_quantizer_utils
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config

    class LayerFilteredQuantizer(PT2EQuantizer):
        def __init__(self) -> None:
            super().__init__()
            #: (op, module path) of the ops `annotate` left float; filled when the graph is prepared.
            self.float_fallbacks: list[tuple[str, str]] = []

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            from unittest import mock

            def quantized(node: torch.fx.Node) -> bool:
                return not any(
                    path == name or path.startswith(f"{name}.")
                    for path, _ in node.meta.get("nn_module_stack", {}).values()
                    for name in float_layers
                )

            restore_source_functions(model)
            annotate_conv_relu6(model, self.global_config, quantized)
            with mock.patch.object(
                pt2e_quantizer_utils, "_get_aten_graph_module_for_pattern", _module_pattern
            ):
                self._annotate_all_static_patterns(model, self.global_config, quantized)
            annotate_modern_ops(model, self.global_config, quantized)
            pt2e_quantizer_utils.propagate_annotation(model)
            share_fixed_scales(model)
            self.float_fallbacks = float_fallbacks(model, quantized)
            return model

    return LayerFilteredQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_qat=qat)
    )
