"""`round_to: auto` (any framework): each pruning group's width snapped to the right edge of its latency
plateau on the recipe's export targets, then the model pruned to exactly those widths.

1. The wanted widths come from the usual plan (ratio, layer ratios or a MAC/parameter target) at round_to 1.
2. For each pruning group (the framework's dependency group: the convs writing its channels and those
   reading them; `torch_widths.pruning_groups`, `keras_widths.pruning_groups`), every layer of the group is timed on each export target (the recipe's exports on their
   devices, int8 for int8/auto exports, fp32 otherwise) over a sweep of channel counts from the wanted
   width up to the next multiple of 64 (the widest kernel tile), through the device's latency model
   (`latency/model.py`: cached, measured once per shape).
3. The group keeps the most channels that cost no more than the wanted width on every target together
   (`latency.staircase.plateau_edge` on the sum of each target's cost relative to its cost at the wanted
   width), never fewer than wanted.
4. The model is pruned once more, from the unpruned one, to exactly those widths: the explicit per-group
   width plan (group root layer -> channels kept), framework-neutral, recorded in the report.

Where a target cannot be measured (its runtime is not installed here, or the device is only a profile),
the wanted width is rounded up to the device profile's channel multiple for that runtime and precision
(`DeviceProfile.channel_multiples`, defaulting from the ISA), with a warning in the report.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edgecompress.errors import DeviceError
from edgecompress.latency.staircase import plateau_edge

if TYPE_CHECKING:
    from edgecompress.context import RunContext

#: The widest kernel tile (int8 AMX, oneDNN's AMX input blocking): a plateau ends before the next multiple.
WIDEST_TILE = 64
#: Channel counts are swept in steps of this (the narrowest kernel tile).
SWEEP_UNIT = 8


@dataclasses.dataclass(frozen=True)
class Group:
    """A pruning group: its root layer, its channel count now and unpruned, and its layers by role."""

    root: str
    channels: int
    original: int
    step: int  # channel groups: widths must be multiples of it
    producers: tuple[str, ...]  # layers whose output channels are the group's
    consumers: tuple[str, ...]  # layers whose input channels are the group's (producers left out)
    #: Every layer reading the group's channels, producers included (a conv in a concatenation can read
    #: and write the same group): what a layer's parameter count depends on (PreCropping).
    readers: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Target:
    runtime: str
    precision: str  # "int8" or "fp32"
    device: Any

    @property
    def label(self) -> str:
        return f"{self.device.name}/{self.runtime}-{self.precision}"


def export_target(spec: Any, ctx: RunContext, device_name: str | None = None) -> Target:
    """What an export runs on: its runtime, the precision its latency tables take (int8 for int8/auto) and
    its device (`device_name`, else the export's `device:`, else the recipe's first)."""
    from edgecompress.registry import EXPORTERS
    from edgecompress.specs import load_device

    name = device_name or spec.device or (ctx.recipe.devices[0] if ctx.recipe.devices else "desktop")
    return Target(
        runtime=EXPORTERS.get(spec.format).runtime,
        precision="int8" if spec.precision in ("int8", "auto") else "fp32",
        device=load_device(name, base_dir=ctx.recipe_path.parent),
    )


def export_targets(ctx: RunContext) -> list[Target]:
    """The (runtime, precision, device) of every export of the recipe, once each."""
    seen: dict[tuple[str, str, str], Target] = {}
    for spec in ctx.recipe.export:
        target = export_target(spec, ctx)
        seen.setdefault((target.runtime, target.precision, target.device.name), target)
    return list(seen.values())


def resized(layer: Any, *, out: int | None = None, inp: int | None = None) -> Any:
    """A LayerOp with its output and/or input channels changed (a depthwise conv changes both)."""
    attrs = dict(layer.attrs)
    shape = list(layer.input_shape)
    depthwise = layer.op == "conv2d" and attrs.get("groups", 1) > 1 and attrs["groups"] == shape[-1]
    if depthwise and (out is not None or inp is not None):
        width = out if out is not None else inp
        attrs.update(out_channels=width * (attrs["out_channels"] // attrs["groups"]), groups=width)
        shape[-1] = width
    else:
        if out is not None:
            attrs["out_channels" if layer.op == "conv2d" else "out_features"] = out
        if inp is not None:
            shape[-1] = inp
    return dataclasses.replace(layer, input_shape=tuple(shape), attrs=tuple(sorted(attrs.items())))


def sweep(group: Group) -> list[int]:
    """Channel counts timed for a group: the wanted one, then every multiple of max(8, step) above it up to
    the next multiple of WIDEST_TILE (and never past the unpruned width). Kernel tiles are multiples of 8 on
    every CPU these runtimes target (x86: 8 to 64; ARM NEON: 8 and 16), so a plateau ends at one."""
    unit = max(SWEEP_UNIT, group.step)
    top = min(group.original, math.ceil(group.channels / WIDEST_TILE) * WIDEST_TILE)
    first = math.ceil((group.channels + 1) / unit) * unit
    return [group.channels, *range(first, top + 1, unit)]


def snap_widths(
    trial: Any, groups: list[Group], ctx: RunContext, *, layers: Callable[[Any], dict[str, list[Any]]]
) -> tuple[dict[str, int], dict[str, Any]]:
    """The width plan (group root -> channels) and what was measured for it (for the report).

    `trial` is the model pruned to the wanted widths; `layers(trial)` maps a layer name to its LayerOps.
    """
    from edgecompress.latency.model import LatencyModel

    by_name = layers(trial)
    targets = export_targets(ctx)
    measured: dict[str, dict[str, dict[int, float]]] = {}
    fallback_notes: list[str] = []
    plan: dict[str, int] = {}
    multiples: dict[str, int] = {}
    models: dict[str, Any] = {}
    for target in targets:
        threads = ctx.recipe.profile.threads or target.device.threads
        model = LatencyModel(
            target.device, target.runtime, threads=threads, ui=ctx.ui, recalibrate=ctx.recalibrate
        )
        try:
            model.table  # noqa: B018 (reads the device's facts: raises when it cannot be measured)
            models[target.label] = model
        except DeviceError as exc:
            if target.device.connection.runner != "local":
                raise DeviceError(
                    f"{exc} — round_to: auto needs {target.device.name} to measure channel staircases; give "
                    f"round_to a number, or set channel_multiples in its device profile"
                ) from exc
            multiples[target.label] = target.device.channel_multiple(target.runtime, target.precision)
            fallback_notes.append(
                f"{target.label}: cannot be measured here ({exc}); widths rounded up to its channel multiple "
                f"{multiples[target.label]} instead"
            )
            ctx.ui.warn(fallback_notes[-1])
    with ctx.ui.progress("round_to auto: channel staircases", total=len(groups)) as task:
        for group in groups:
            counts = sweep(group)
            totals = dict.fromkeys(counts, 0.0)
            for label, model in models.items():
                precision = label.rsplit("-", 1)[1]
                costs = group_costs(model, {group: counts}, by_name, precision).get(group.root)
                if costs is None:
                    continue
                measured.setdefault(group.root, {})[label] = {c: round(t, 5) for c, t in costs.items()}
                base = costs[group.channels] or 1e-9
                for count in counts:
                    totals[count] += costs[count] / base
            keep = plateau_edge(totals, group.channels) if measured.get(group.root) else group.channels
            for multiple in multiples.values():
                keep = max(keep, min(group.original, math.ceil(keep / multiple) * multiple))
            plan[group.root] = keep - keep % group.step if keep % group.step else keep
            task.advance()
    info = {"staircases": measured, "fallback": fallback_notes, "targets": [t.label for t in targets]}
    return plan, info


def group_costs(
    latency_model: Any,
    sweeps: dict[Group, list[int]],
    by_name: dict[str, list[Any]],
    precision: str,
) -> dict[str, dict[int, float]]:
    """Group root -> {channel count: ms}: the latency model's time of the group's layers at each count of
    its sweep (the layers writing its channels resized in their output, those reading them in their input;
    each one-layer time less the per-call cost it carries), measured in one batch. Groups without a layer
    the latency model knows are left out."""
    graphs = {
        (group.root, count): [
            *(resized(op, out=count).graph(precision) for n in group.producers for op in by_name.get(n, [])),
            *(resized(op, inp=count).graph(precision) for n in group.consumers for op in by_name.get(n, [])),
        ]
        for group, counts in sweeps.items()
        for count in counts
    }
    flat = [g for gs in graphs.values() for g in gs]
    if not flat:
        return {}
    times = iter(latency_model.latencies(flat, what="channel counts"))
    overhead = latency_model.overhead_ms(precision)
    out: dict[str, dict[int, float]] = {}
    for (root, count), gs in graphs.items():
        cost = sum(max(next(times) - overhead, 0.0) for _ in gs)
        if gs:
            out.setdefault(root, {})[count] = cost
    return out


def note_snap(
    ctx: RunContext, groups: list[Group], plan: dict[str, int], after: dict[str, int], info: dict
) -> None:
    """Record a round_to auto snap in the run notes (widths before, wanted, after; the staircases measured;
    the targets and fallbacks) and say it on the console; warn about groups the pruning did not bring to
    their planned width. `after`: output channels of the root layers in the pruned model."""
    missed = {root: (keep, after.get(root)) for root, keep in plan.items() if after.get(root) != keep}
    if missed:
        ctx.ui.warn(f"prune: round_to auto: some groups did not reach their planned width: {missed}")
    ctx.note("round_to", "auto")
    ctx.note(
        "widths",
        {
            g.root: [g.original, g.channels, after.get(g.root, plan[g.root])]
            for g in groups
            if g.original != after.get(g.root)
        },
    )
    ctx.note("width_plan_targets", info["targets"])
    if info["fallback"]:
        ctx.note("width_plan_fallback", info["fallback"])
    ctx.note("staircases", info["staircases"])
    snapped = sum(1 for g in groups if after.get(g.root, g.channels) > g.channels)
    ctx.ui.info(
        f"prune: round_to auto: {snapped} of {len(groups)} groups widened to the edge of their latency plateau "
        f"on {', '.join(info['targets'])}"
    )
