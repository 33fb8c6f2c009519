"""Plateau edges of a channel-count staircase, and the ISA fallback multiples."""

from __future__ import annotations

import pytest

from edgecompress.latency.staircase import default_channel_multiple, plateau_edge


def test_the_edge_is_the_last_count_before_a_step_up():
    costs = {40: 1.00, 48: 1.01, 56: 0.99, 64: 1.02, 72: 1.40, 80: 1.41}
    assert plateau_edge(costs, 40) == 64
    assert plateau_edge(costs, 72) == 80


def test_a_step_right_after_the_start_keeps_the_start():
    assert plateau_edge({17: 1.0, 24: 1.5, 32: 1.5}, 17) == 17


def test_a_dip_after_a_step_is_not_reached():
    """Walking up stops at the first step: a cheaper count past it (noise, or another kernel) is not taken."""
    assert plateau_edge({8: 1.0, 16: 2.0, 24: 0.9}, 8) == 8


def test_the_tolerance_absorbs_timing_noise():
    assert plateau_edge({8: 1.0, 16: 1.025}, 8) == 16
    assert plateau_edge({8: 1.0, 16: 1.025}, 8, tolerance=0.01) == 8
    with pytest.raises(ValueError, match="no measurement at the start"):
        plateau_edge({16: 1.0}, 8)


@pytest.mark.parametrize(
    ("runtime", "precision", "isa", "arch", "expected"),
    [
        ("litert", "fp32", ["avx2", "fma"], "x86_64", 16),
        ("litert", "fp32", ["avx2", "fma", "avx512f"], "x86_64", 32),
        ("litert", "fp32", ["asimd"], "aarch64", 8),
        ("litert", "int8", ["avx2"], "x86_64", 8),
        ("litert", "int8", ["avx512f", "avx512_vnni"], "x86_64", 16),
        ("litert", "int8", ["asimd", "asimddp"], "aarch64", 16),
        ("litert", "int8", ["avx512_vnni", "amx_int8"], "x86_64", 64),
        ("openvino", "fp32", ["avx2"], "x86_64", 8),
        ("openvino", "fp32", ["avx512f"], "x86_64", 16),
        ("openvino", "int8", ["avx512f", "amx_int8"], "x86_64", 64),
    ],
)
def test_default_multiples_follow_the_kernels_tiles(runtime, precision, isa, arch, expected):
    assert default_channel_multiple(runtime, precision, isa, arch) == expected
