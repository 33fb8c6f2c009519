"""Pattern sparsity (edgecompress.sparsity): masks make their pattern, checks find a broken one, global MP
meets its total with a minimum density, gradual masks are sub-patterns of the final one."""

from __future__ import annotations

import numpy as np
import pytest

from edgecompress.sparsity import (
    LayerPattern,
    allocate_global,
    check,
    choose_kernel_patterns,
    keep_mask,
    kernel_pattern_sparsity,
    not_applicable,
    training_plan,
)

RNG = np.random.default_rng(0)
W = RNG.normal(size=(16, 8, 3, 3)).astype(np.float32)
KP = choose_kernel_patterns([W], 4, 6)
PATTERNS = {
    "unstructured": LayerPattern("unstructured", 0.7),
    "block1x4": LayerPattern("block", 0.5, block=(1, 4)),
    "block4x1": LayerPattern("block", 0.75, block=(4, 1)),
    "block4x4": LayerPattern("block", 0.5, block=(4, 4)),
    "nm24": LayerPattern("nm", 0.5, n=2, m=4),
    "nm14": LayerPattern("nm", 0.75, n=1, m=4),
    "nm48": LayerPattern("nm", 0.5, n=4, m=8),
    "kernel": LayerPattern(
        "kernel_pattern", kernel_pattern_sparsity(4, 0.25), patterns=KP, connectivity=0.25
    ),
}


@pytest.mark.parametrize("name", list(PATTERNS))
def test_mask_makes_its_pattern_and_gradual_masks_are_sub_patterns(name):
    pattern = PATTERNS[name]
    keep = keep_mask(W, pattern)
    assert keep.shape == W.shape
    result = check(W * keep, pattern)
    assert result.holds, result.detail
    assert result.sparsity == pytest.approx(pattern.sparsity, abs=0.02)
    assert not check(W, pattern).holds  # the dense weight does not hold it
    half = keep_mask(W, pattern, fraction=0.5)
    assert np.all(half | ~keep)  # every weight the half mask drops, the full one drops too
    assert (1 - half.mean()) == pytest.approx(pattern.sparsity / 2, abs=0.03)


def test_extra_zeros_keep_a_pattern_and_a_missing_zero_breaks_it():
    nm = PATTERNS["nm24"]
    w = W * keep_mask(W, nm)
    w[0, :4, 0, 0] = 0.0  # int8 rounding a group to zeros: still 2:4
    assert check(w, nm).holds
    w[0, :4, 1, 1] = 1.0  # four non-zeros in one group
    result = check(w, nm)
    assert not result.holds and "1 groups over 2" in result.detail
    block = PATTERNS["block1x4"]
    wb = W * keep_mask(W, block)
    empty = np.argwhere(wb.reshape(16, 2, 4, 9).any(axis=2) == 0)[0]
    wb[empty[0], empty[1] * 4, empty[2] // 3, empty[2] % 3] = 0.5
    assert not check(wb, block).holds


def test_kernel_patterns_keep_positions_of_the_chosen_set():
    pattern = PATTERNS["kernel"]
    w = W * keep_mask(W, pattern)
    kept = {tuple(np.flatnonzero(k)) for k in (w.reshape(-1, 9) != 0) if k.any()}
    assert kept <= set(KP) and len(KP) == 6 and all(len(p) == 4 for p in KP)
    empty = int((~(w.reshape(-1, 9) != 0).any(axis=1)).sum())
    assert empty == round(0.25 * 16 * 8)


def test_global_ranking_meets_the_total_and_the_minimum_density():
    weights = {"small": RNG.normal(size=(4, 4, 3, 3)) * 0.01, "big": RNG.normal(size=(32, 16, 3, 3))}
    patterns = {n: LayerPattern("unstructured", 0.0) for n in weights}
    alloc = allocate_global(weights, patterns, 0.8, 0.1)
    assert alloc["small"] == pytest.approx(0.9)  # would be 100% without the minimum density
    total = sum(alloc[n] * w.size for n, w in weights.items()) / sum(w.size for w in weights.values())
    assert total == pytest.approx(0.8, abs=0.01)


@pytest.mark.parametrize(
    ("shape", "groups", "pattern", "why"),
    [
        ((16, 1, 3, 3), 16, PATTERNS["nm24"], "depthwise"),
        ((16, 6, 3, 3), 1, PATTERNS["nm24"], "not divisible by m = 4"),
        ((16, 6, 3, 3), 1, PATTERNS["block1x4"], "does not divide"),
        ((16, 8, 1, 1), 1, PATTERNS["kernel"], "1x1 kernels"),
        ((16, 8, 3, 3), 1, PATTERNS["nm24"], None),
        ((16, 6, 3, 3), 1, LayerPattern("block", 0.5, block=(1, 4), pad=True), None),
    ],
)
def test_layers_a_pattern_cannot_take_are_named(shape, groups, pattern, why):
    reason = not_applicable(shape, groups, pattern)
    assert (reason is None) if why is None else (why in reason)


def test_padded_blocks_prune_a_layer_the_block_does_not_divide():
    w = RNG.normal(size=(10, 6, 1, 1))
    pattern = LayerPattern("block", 0.5, block=(4, 4), pad=True)
    kept = w * keep_mask(w, pattern)
    assert check(kept, pattern).holds and 0.3 < (kept == 0).mean() < 0.7


def test_training_plan_ramps_in_the_first_training_stage_after_a_polynomial_prune():
    plan = {"schedule": "polynomial", "layers": {}}
    notes = {1: {"sparsity_plan": plan}}
    types = ["train", "prune", "distill", "train", "quantize"]
    assert training_plan(notes, types, 0) is None
    assert training_plan(notes, types, 2)["ramp"] is True
    assert training_plan(notes, types, 3)["ramp"] is False  # holds, does not ramp again
