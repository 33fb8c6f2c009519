"""The per-op form rule a precision plan uses, shared by the planner and latency-budget predictions: the
fastest int8 form, float only when faster than it by more than FLOAT_MARGIN, never float for weights."""

from __future__ import annotations

from torch import nn

from edgecompress.frameworks.torch_layers import float_graph, layer_ops
from edgecompress.precision import FLOAT_MARGIN, candidate_forms, pick_form, planned_graphs
from edgecompress.stages.quantize.torch_derive import kind_forms


def test_pick_form_prefers_int8_within_the_margin():
    assert pick_form({"int8": 1.0, "int8-decomposed": 0.5, "float": 0.48})[0] == "int8-decomposed"
    close = 0.5 / (1 + FLOAT_MARGIN) + 1e-6  # float faster, but not by more than the margin
    assert pick_form({"int8": 0.5, "float": close})[0] == "int8"
    assert pick_form({"int8": 0.5, "float": 0.2})[0] == "float"
    assert pick_form({"float": 0.3}) == ("float", "no int8 form")


def test_candidate_forms_keep_weights_int8_and_leave_openvino_activations_to_openvino():
    assert "float" not in candidate_forms("conv", kind_forms("conv"), "litert", "int8")
    assert "float" in candidate_forms("conv", kind_forms("conv"), "litert", "auto")
    assert candidate_forms("hardswish", kind_forms("hardswish"), "openvino", "int8") == ["int8"]
    assert candidate_forms("hardswish", kind_forms("hardswish"), "litert", "int8") == [
        "int8",
        "int8-decomposed",
        "float",
    ]


class _Times:
    """Latencies by form, as a latency model would measure them (here: hardswish int8 slow, decomposed fast)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def latencies(self, graphs, *, what="layers"):
        self.asked += [g.label for g in graphs]
        out = []
        for g in graphs:
            if "hardswish" in g.label:
                out.append(0.05 if "decomposed" in g.label else 0.2 if "int8" in g.label else 0.08)
            else:
                out.append(0.1)
        return out


def test_planned_graphs_give_each_layer_its_planned_form():
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.Hardswish(), nn.Conv2d(8, 8, 1)).eval()
    shape = [1, 1, 16, 16]
    layers = layer_ops(float_graph(model, shape), shape)
    times = _Times()
    graphs = planned_graphs(layers, "litert", times, kind_forms)
    kinds = [layer.kind for layer in layers]
    assert kinds.count("hardswish") == 1 and kinds.count("conv") == 2
    by_kind = dict(zip(kinds, graphs, strict=True))
    assert "decomposed" in by_kind["hardswish"].label  # the fastest int8 form, not all-int8
    assert all(g.nodes[0].precision == "int8" for k, g in zip(kinds, graphs, strict=True) if k == "conv")
    assert not any("conv" in label for label in times.asked)  # a conv has one form: nothing to measure
