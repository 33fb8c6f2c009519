"""What `TorchAdapter.fit`'s CPU speed-ups buy: glibc malloc tuning and channels_last training.

    .venv/bin/python benchmarks/training_speed.py            # about 2 minutes on 2 idle cores
    .venv/bin/python benchmarks/training_speed.py --threads 1  # steadier when other work shares the cores

AdamW train steps (cross-entropy, batch norm in train mode) of `mobilenet_v2_digits`,
`mobilenet_v3_small_digits` and `resnet18_digits` (examples/architectures.py; its 1x1 stride-2 shortcuts
train in NCHW, see `channels_last_hooks`) on random 32x32x1 images at batch 64 and 128, in three
configurations measured in the same process, interleaved round by round so that load from
elsewhere hits them alike:

- before: NCHW, glibc malloc as by default. The default's thresholds move (each freed mmap'ed block raises
  the mmap threshold to its size, up to 32 MiB, and the trim threshold to twice that); they are set here to
  that ceiling, the most favourable state the default reaches, so the gain shown is a lower bound.
- malloc: NCHW, malloc as `tune_malloc` sets it.
- after: what `fit` does with `channels_last: true`: `tune_malloc` and channels_last (`channels_last_hooks`).

Prints images/s, system time and minor page faults per step, and the speed-up after/before.
"""

from __future__ import annotations

import argparse
import ctypes
import resource
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "examples")]

from architectures import mobilenet_v2_digits, mobilenet_v3_small_digits, resnet18_digits  # noqa: E402

from edgecompress.frameworks.torch import (  # noqa: E402
    M_MMAP_THRESHOLD,
    M_TOP_PAD,
    M_TRIM_THRESHOLD,
    channels_last_hooks,
    tune_malloc,
)

MODELS = {
    "MobileNetV2-digits": mobilenet_v2_digits,
    "MobileNetV3-small-digits": mobilenet_v3_small_digits,
    "ResNet-18-digits": resnet18_digits,
}
CONFIGS = ("before", "malloc", "after")
LIBC = ctypes.CDLL(None)


def default_malloc() -> None:
    """glibc's default thresholds at their ceiling (see the module docstring); the free heap top returned."""
    LIBC.mallopt(M_MMAP_THRESHOLD, 32 << 20)
    LIBC.mallopt(M_TRIM_THRESHOLD, 64 << 20)
    LIBC.mallopt(M_TOP_PAD, 128 << 10)
    LIBC.malloc_trim(0)


def tuned_malloc() -> None:
    tune_malloc.cache_clear()
    assert tune_malloc(), "glibc malloc did not take the settings"


class Trainer:
    """One model and optimizer in one configuration, stepping on a fixed random batch."""

    def __init__(self, make, batch: int, config: str) -> None:
        torch.manual_seed(0)
        self.model = make().train()
        self.x = torch.randn(batch, 1, 32, 32)
        self.y = torch.randint(0, 10, (batch,))
        if config == "after":
            assert channels_last_hooks(self.model, self.x[:2]) is not None, "channels_last refused"
            self.x = self.x.contiguous(memory_format=torch.channels_last)
            self.model.train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3)

    def step(self) -> None:
        loss = F.cross_entropy(self.model(self.x), self.y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def measure(trainer: Trainer, steps: int) -> tuple[float, float, int]:
    """Wall seconds, system seconds and minor page faults of `steps` steps."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    return wall, after.ru_stime - before.ru_stime, after.ru_minflt - before.ru_minflt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=256, help="images per configuration and round")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} interleaved rounds")
    header = (
        f"{'model':26} {'batch':>5}  {'before':>7} {'malloc':>7} {'after':>7} img/s  {'speed-up':>8}  "
        f"{'sys s/step':>16}  {'minor faults/step':>20}"
    )
    print(header)
    print("-" * len(header))
    for name, make in MODELS.items():
        for batch in (64, 128):
            steps = max(2, args.images // batch)
            trainers = {config: Trainer(make, batch, config) for config in CONFIGS}
            totals = {config: [0.0, 0.0, 0] for config in CONFIGS}
            for round_ in range(args.rounds + 1):  # round 0 warms up
                for config in CONFIGS:
                    (default_malloc if config == "before" else tuned_malloc)()
                    for _ in range(2):  # settle the heap under this configuration
                        trainers[config].step()
                    wall, system, faults = measure(trainers[config], steps)
                    if round_:
                        for i, value in enumerate((wall, system, faults)):
                            totals[config][i] += value
            n = args.rounds * steps
            speed = {c: n * batch / totals[c][0] for c in CONFIGS}
            print(
                f"{name:26} {batch:>5}  {speed['before']:7.0f} {speed['malloc']:7.0f} {speed['after']:7.0f}"
                f"        {speed['after'] / speed['before']:7.2f}x  "
                f"{totals['before'][1] / n:7.3f} -> {totals['after'][1] / n:6.3f}  "
                f"{totals['before'][2] / n:9.0f} -> {totals['after'][2] / n:7.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
