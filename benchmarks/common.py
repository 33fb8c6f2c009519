"""Helpers shared by the benchmark scripts: a RunContext on random images, edgecompress's exporters, the
machine/version line, and writing one section of benchmarks/RESULTS.md."""

from __future__ import annotations

import os
import platform
import sys
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

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
from edgecompress.runtimes.measure import cpu_info  # noqa: E402

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
