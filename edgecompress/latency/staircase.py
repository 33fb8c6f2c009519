"""Channel-count staircases: a layer's latency against its channel count is flat between kernel tiles.

Runtimes pad channels to their kernels' tile widths, so keeping 65 channels costs what 80 (or 96, or 128)
costs and 64 costs less. `plateau_edge` picks, from a measured sweep, the most channels that cost no more
than the wanted count (the right edge of its plateau): free accuracy. `default_channel_multiple` is the
fallback when nothing can be measured: the tile width the runtime's kernels use on the device's ISA, from
the kernels' sources (XNNPACK, oneDNN); they change between versions, so a measurement always wins.
"""

from __future__ import annotations

#: A point counts as on the same plateau when it costs at most this much more (timing noise).
PLATEAU_TOLERANCE = 0.03


def plateau_edge(costs: dict[int, float], start: int, *, tolerance: float = PLATEAU_TOLERANCE) -> int:
    """The largest channel count at or above `start` reached without a step up: walking up the sweep from
    `start`, stop before the first count that costs more than `start`'s by more than `tolerance`."""
    if start not in costs:
        raise ValueError(f"the sweep has no measurement at the start count {start}")
    base = costs[start]
    edge = start
    for count in sorted(c for c in costs if c > start):
        if costs[count] > base * (1 + tolerance):
            break
        edge = count
    return edge


def default_channel_multiple(
    runtime: str, precision: str, isa_flags: list[str] | tuple[str, ...], arch: str
) -> int:
    """The channel multiple a runtime's kernels pad to on a CPU, for when the device cannot be measured.

    XNNPACK (LiteRT): fp32 pads output channels to 32 on AVX-512, 16 on AVX2/FMA, 8 on ARM NEON; int8 to 64
    with AMX, 16 with AVX-512 VNNI or ARM dotprod/i8mm, 8 otherwise. oneDNN (OpenVINO CPU): blocks by 16 on
    AVX-512, 8 on AVX2; int8 on AMX by 64 (input channels).
    """
    flags = set(isa_flags)
    arm = arch in ("aarch64", "arm64", "armv7l") or "asimd" in flags or "neon" in flags
    if runtime == "litert":
        if precision == "int8":
            if "amx_int8" in flags:
                return 64
            if {"avx512_vnni", "asimddp", "i8mm"} & flags:
                return 16
            return 8
        if arm:
            return 8
        return 32 if "avx512f" in flags else 16
    if runtime == "openvino":
        if precision == "int8" and "amx_int8" in flags:
            return 64
        return 16 if "avx512f" in flags else 8
    raise ValueError(f"unknown runtime '{runtime}'")
