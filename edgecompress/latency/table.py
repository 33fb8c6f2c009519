"""The latency table of one device x runtime x thread count, cached as a versioned JSON file.

    <cache>/latency/<device>/<runtime>-<runtime version>-t<threads>-<cpu digest>.json

`<cache>` is `edgecompress.cache.cache_root()`: `$EDGECOMPRESS_CACHE`, else `$XDG_CACHE_HOME/edgecompress`, else `~/.cache/edgecompress`
(read when a table is opened, never at import). The file name carries what the timings depend on: the
device, the runtime's version, the thread count, and a digest of the CPU model and its ISA flags, so a
table made with another runtime version, CPU or thread count is never reused (it stays beside the new one;
the date a table was made is recorded in it, not part of its key). Entries are keyed by
`OpGraph.key()` and hold the fastest round's p50 with every round's p50.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgecompress.cache import cache_root  # re-exported: `from edgecompress.latency.table import cache_root`

#: Bumped when the measuring protocol or the builders change what a table entry means.
TABLE_VERSION = 3  # 2: OpenVINO int8 layers write int8 into an excluded reader; 3: boundary FQs count


class TableKey(BaseModel):
    """What a table's timings depend on: two tables with equal keys time the same things alike."""

    model_config = ConfigDict(frozen=True)
    device: str
    runtime: str
    runtime_version: str
    threads: int
    cpu_model: str
    isa_flags: tuple[str, ...]

    def file_name(self) -> str:
        digest = hashlib.sha256(f"{self.cpu_model}|{','.join(sorted(self.isa_flags))}".encode()).hexdigest()[
            :10
        ]
        version = "".join(c if c.isalnum() or c in ".-" else "_" for c in self.runtime_version)
        return f"{self.runtime}-{version}-t{self.threads}-{digest}.json"


class Entry(BaseModel):
    """One measured graph."""

    model_config = ConfigDict(frozen=True)
    label: str = Field(description="What was measured, for people reading the file.")
    p50_ms: float = Field(description="The fastest round's p50.")
    rounds_p50_ms: list[float]
    runs: int
    measured: str = Field(description="UTC date and time of the measurement.")


class LatencyTable(BaseModel):
    """A device x runtime x threads latency table, as stored."""

    version: int = TABLE_VERSION
    key: TableKey
    created: str
    updated: str
    entries: dict[str, Entry] = Field(default_factory=dict)

    @classmethod
    def path_for(cls, key: TableKey, root: Path | None = None) -> Path:
        return (root or cache_root()) / "latency" / key.device / key.file_name()

    @classmethod
    def open(
        cls, key: TableKey, root: Path | None = None, *, fresh: bool = False
    ) -> tuple[LatencyTable, str]:
        """The cached table for `key` (an empty one when there is none, when it is unreadable or of another
        table version, or when `fresh`), and a note for the user ('' when the cache served as is)."""
        path = cls.path_for(key, root)
        now = _now()
        empty = cls(key=key, created=now, updated=now)
        if fresh:
            return empty, f"latency table {path} rebuilt (--recalibrate)"
        if not path.is_file():
            others = (
                sorted(p.name for p in path.parent.glob(f"{key.runtime}-*.json"))
                if path.parent.is_dir()
                else []
            )
            note = (
                f"no latency table for {key.device}/{key.runtime} with {key.runtime_version}, {key.threads} threads "
                f"and this CPU; building one"
                + (f" (cached for other versions/CPUs/threads: {', '.join(others)})" if others else "")
            )
            return empty, note
        try:
            table = cls.model_validate(json.loads(path.read_text()))
        except (OSError, ValueError, ValidationError) as exc:
            return empty, f"latency table {path} unreadable ({type(exc).__name__}); rebuilding it"
        if table.version != TABLE_VERSION or table.key != key:
            return empty, f"latency table {path} is of another version or device; rebuilding it"
        return table, ""

    def save(self, root: Path | None = None) -> Path:
        """Write the table atomically (a temporary file renamed over the old one)."""
        path = self.path_for(self.key, root)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.updated = _now()
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(self.model_dump_json(indent=1))
        tmp.replace(path)
        return path


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
