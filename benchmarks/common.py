"""Helpers shared by the benchmark scripts: a RunContext on random images, edgecompress's exporters, the
machine/version line, and writing one section of benchmarks/RESULTS.md."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(ROOT / "examples") not in sys.path:
    sys.path.insert(0, str(ROOT / "examples"))

from edgecompress.console import UI  # noqa: E402
from edgecompress.context import RunContext  # noqa: E402
from edgecompress.data import DataBundle, Split  # noqa: E402
from edgecompress.recipe import parse_recipe  # noqa: E402
from edgecompress.registry import FRAMEWORKS  # noqa: E402
from edgecompress.runtimes.probe import cpu_info  # noqa: E402

RESULTS = ROOT / "benchmarks" / "RESULTS.md"
VERSIONED = ("torch", "torch-pruning", "torchao", "litert-torch", "ai-edge-litert", "openvino", "nncf")


def random_bundle(shape: list[int], count: int, num_classes: int = 1000, seed: int = 0) -> DataBundle:
    """`count` standard-normal images of `shape` (with batch) as every split: latency does not depend on the
    pixels, so they stand in for a dataset (trace sample, calibration images, sidecar facts)."""
    rng = np.random.default_rng(seed)
    split = Split(
        rng.standard_normal((count, *shape[1:])).astype(np.float32),
        np.arange(count, dtype=np.int64) % num_classes,
    )
    return DataBundle(
        train=split,
        val=split,
        test=split,
        calibration=split,
        num_classes=num_classes,
        class_names=[str(i) for i in range(num_classes)],
        layout="NCHW",
        sample_shape=tuple(shape[1:]),
        mean=None,
        std=None,
    )


def make_context(recipe_yaml: str, out_dir: Path, data: DataBundle, ui: UI) -> RunContext:
    """A RunContext for the recipe text, as a build would make, on the given data."""
    recipe = parse_recipe(recipe_yaml)
    return RunContext(
        recipe=recipe,
        recipe_path=out_dir / "recipe.yaml",
        workdir=out_dir,
        adapter=FRAMEWORKS.get("torch")(),
        data=data,
        ui=ui,
    )


def machine_line() -> str:
    cpu, isa = cpu_info()
    return f"{cpu}, {os.cpu_count()} cores, {platform.machine()}; ISA: {', '.join(isa) or 'none detected'}"


def versions_line(packages: tuple[str, ...] = VERSIONED) -> str:
    out = []
    for p in packages:
        try:
            out.append(f"{p} {version(p)}")
        except Exception:
            continue
    return ", ".join(out) + f"; Python {platform.python_version()}"


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def write_section(heading: str, section: str, results: Path = RESULTS) -> None:
    """Replace (or append) the section that starts with `heading` in benchmarks/RESULTS.md."""
    text = results.read_text() if results.exists() else "# Benchmark results\n"
    start = text.find(heading + "\n")
    if start >= 0:
        nxt = text.find("\n## ", start + len(heading))
        text = text[:start] + section.rstrip("\n") + "\n" + (text[nxt:] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    results.write_text(text.rstrip("\n") + "\n")


@dataclass(frozen=True)
class Timing:
    """The p50s of one artifact's interleaved fresh-process rounds. Its p50 is the lowest of them, as in
    edgecompress's reports (`profiling.combine_rounds`); the highest bounds the range."""

    rounds_ms: tuple[float, ...]

    @property
    def p50_ms(self) -> float:
        return min(self.rounds_ms)

    @property
    def high_ms(self) -> float:
        return max(self.rounds_ms)

    @property
    def spread(self) -> tuple[float, float]:
        return self.p50_ms, self.high_ms

    def text(self, digits: int = 3) -> str:
        return f"{self.p50_ms:.{digits}f} ({self.p50_ms:.{digits}f}–{self.high_ms:.{digits}f})"


class RuntimeMeter:
    """Latency through edgecompress's LocalRunner in interleaved fresh-process rounds (A, B, C, A, B, C, ...,
    so that a slow spell of the machine falls on every artifact alike), and accuracy on the runtime."""

    def __init__(self, *, threads: int, runs: int, warmup: float, rounds: int, ui: UI | None = None) -> None:
        from edgecompress.runners.local import LocalRunner
        from edgecompress.specs import load_device

        self.threads, self.runs, self.warmup, self.rounds = threads, runs, warmup, rounds
        self.ui = ui or UI(verbosity=0)
        self.runner = LocalRunner()
        self.device = load_device("desktop")

    def timings(self, artifacts: dict[Any, Any]) -> dict[Any, Timing]:
        p50s: dict[Any, list[float]] = {key: [] for key in artifacts}
        for _ in range(self.rounds):
            for key, artifact in artifacts.items():
                m = self.runner.run(
                    artifact,
                    self.device,
                    runs=self.runs,
                    warmup_seconds=self.warmup,
                    threads=self.threads,
                    op_profile=False,
                )
                p50s[key].append(float(m.latency.p50_ms))
        return {key: Timing(tuple(v)) for key, v in p50s.items()}

    def accuracy(self, artifact: Any, split: Any, num_outputs: int) -> float:
        from edgecompress.exporters.parity import run_artifact

        out = run_artifact(artifact, split.x, num_outputs=num_outputs, threads=self.threads, ui=self.ui)
        return float((out.logits.argmax(1) == split.y).mean())


def save_plot(fig: Any, ax: Any, path: Path, stamp: str) -> None:
    """Grid, legend and the machine/version/time footer every benchmark plot carries; saved and closed."""
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.text(0.01, 0.01, f"{machine_line()[:110]}\n{versions_line()[:160]}\n{stamp}", fontsize=6, va="bottom")
    fig.subplots_adjust(bottom=0.22)
    fig.savefig(path, dpi=120)
    plt.close(fig)
