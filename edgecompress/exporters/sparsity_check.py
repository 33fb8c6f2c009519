"""What a sparse model's artifact holds: its weights read back from the file and checked against the pattern,
and its size compressed as an app download or OTA update ships it (gzip -9, zstd -19).

The model's sparse layers are matched to the file's weight tensors by canonical shape and zeros: a file tensor
is the layer's when its zeros contain the layer's zeros (BN folding scales rows, int8 rounds small weights to
0 — both keep every zero), the one with the fewest extra zeros first. A layer with no such tensor but one of
its shape is reported as not holding its pattern (the zeros were lost); one with no tensor of its shape at
all as not found (the exporter changed its form).
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgecompress.sparsity import LayerPattern, canonical, check

GZIP_LEVEL = 9
ZSTD_LEVEL = 19


class LayerInFile(BaseModel):
    """One sparse layer of the model, found (or not) in an artifact."""

    model_config = ConfigDict(frozen=True)
    layer: str
    pattern: str
    tensor: str | None = Field(description="The file's weight tensor matched to it (None: not found).")
    dtype: str | None = None
    model_sparsity: float = Field(description="Fraction of zeros in the model's layer.")
    file_sparsity: float | None = Field(default=None, description="Fraction of zeros in the file's tensor.")
    holds: bool = Field(description="The file's tensor keeps every zero and the pattern.")
    detail: str = ""


class ArtifactSparsity(BaseModel):
    """A sparse model's artifact read back: per layer, the pattern in the file."""

    model_config = ConfigDict(frozen=True)
    layers: list[LayerInFile]
    file_sparsity: float = Field(description="Zeros over every conv/linear weight of the file.")

    @property
    def holds(self) -> bool:
        return all(layer.holds for layer in self.layers)


def compressed_sizes(files: list[Path]) -> tuple[int, int]:
    """(gzip -9, zstd -19) bytes of the files, each compressed on its own, summed."""
    import zstandard

    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    gz = zs = 0
    for f in files:
        data = Path(f).read_bytes()
        gz += len(gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0))
        zs += len(compressor.compress(data))
    return gz, zs


def check_artifact(path: Path, plan: dict[str, Any], weights: dict[str, np.ndarray]) -> ArtifactSparsity:
    """The sparse layers of `plan` (a prune stage's `sparsity_plan`) with the model's `weights` (layer ->
    weight in canonical layout), found in the artifact at `path` and checked against their patterns."""
    from edgecompress.exporters.weights_readback import read_weights

    found = read_weights(Path(path))
    used: set[int] = set()
    rows = []
    for name, data in plan["layers"].items():
        pattern = LayerPattern.from_json(data)
        w = canonical(weights[name])
        zeros = w == 0
        same = [i for i, f in enumerate(found) if i not in used and f.values.shape == w.shape]
        keeping = [i for i in same if not (zeros & (found[i].values != 0)).any()]
        pick = min(keeping, key=lambda i: int((found[i].values == 0).sum())) if keeping else None
        if pick is None and same:  # the zeros were lost: the tensor most like the layer's
            pick = max(same, key=lambda i: int((zeros & (found[i].values == 0)).sum()))
        model_sparsity = float(zeros.mean())
        if pick is None:
            rows.append(
                LayerInFile(
                    layer=name,
                    pattern=pattern.describe(),
                    tensor=None,
                    model_sparsity=model_sparsity,
                    holds=False,
                    detail=f"no weight tensor of shape {list(w.shape)} in the file",
                )
            )
            continue
        used.add(pick)
        f = found[pick]
        result = check(f.values, pattern)
        lost = int((zeros & (f.values != 0)).sum())
        rows.append(
            LayerInFile(
                layer=name,
                pattern=pattern.describe(),
                tensor=f.name,
                dtype=f.dtype,
                model_sparsity=model_sparsity,
                file_sparsity=result.sparsity,
                holds=result.holds and lost == 0,
                detail=result.detail + (f"; {lost} zeros of the model are non-zero here" if lost else ""),
            )
        )
    total = sum(f.values.size for f in found)
    zeros_in_file = sum(int((f.values == 0).sum()) for f in found)
    return ArtifactSparsity(layers=rows, file_sparsity=zeros_in_file / max(total, 1))
