"""`edgecompress devices probe TARGET --out devices/NAME.yaml`: a device profile written from what the device
says about itself (runtimes/probe.py, run there by its runner with its own Python), not typed in by hand.

TARGET is `ssh://HOST` (an alias of ~/.ssh/config or user@host[:port]), `adb://SERIAL` (an Android device
with a Python, e.g. Termux's: `--python`), or `local` (this machine).
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from edgecompress.deployability import int8_dot_product
from edgecompress.errors import RecipeError

ARCHES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64", "armv7l": "armv7l"}


def parse_target(target: str) -> dict[str, Any]:
    """The `connection` a TARGET names; RecipeError for anything else."""
    if target == "local":
        return {"runner": "local"}
    scheme, sep, rest = target.partition("://")
    if sep and scheme == "ssh" and rest:
        return {"runner": "ssh", "host": rest}
    if sep and scheme == "adb" and rest:
        return {"runner": "adb", "serial": rest}
    raise RecipeError(
        f"{target}: a target is ssh://HOST (an alias of ~/.ssh/config or user@host[:port]), adb://SERIAL or local"
    )


def profile_from_probe(facts: dict[str, Any], connection: dict[str, Any], *, when: str) -> dict[str, Any]:
    """The device profile's YAML data from probe.py's facts."""
    arch = ARCHES.get(str(facts.get("arch", "")).lower())
    if arch is None:
        raise RecipeError(
            f"the device reports architecture '{facts.get('arch')}', which edgecompress has no kernels table "
            f"for (known: {', '.join(sorted(set(ARCHES.values())))})"
        )
    runtimes = [r for r in ("litert", "openvino") if facts["runtimes"].get(r)]
    cores = int(facts["cores"])
    isa = list(facts["isa_flags"])
    return {
        "description": f"{facts['cpu_model'] or arch}, {cores} cores, {facts['os']} (probed {when[:10]})",
        "cpu": {
            "model": facts["cpu_model"] or arch,
            "arch": arch,
            "cores": cores,
            "isa": isa,
            "int8_dot_product": bool(int8_dot_product(isa)),
        },
        "memory_mb": int(facts["memory_mb"] or 0),
        "threads": cores,
        "runtimes": runtimes,
        "connection": connection,
        "probed": {
            "when": when,
            "os": facts["os"],
            "kernel": facts["kernel"],
            "python": facts["python"],
            "runtimes": facts["runtimes"],
            "governor": facts["governor"],
            "thermal_zones": facts["thermal_zones"],
            "energy_sources": facts["energy_sources"],
        },
    }


def probe_device(
    target: str,
    out: Path,
    *,
    python: str | None = None,
    accept_new: bool = False,
    workdir: str | None = None,
    native: bool = False,
    benchmark_model: str | None = None,
    benchmark_app: str | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Probe TARGET and write its profile to `out` (replacing it whole, never half-written); the profile."""
    from edgecompress.registry import RUNNERS
    from edgecompress.specs import DeviceProfile

    out = Path(out)
    if out.suffix not in (".yaml", ".yml"):
        raise RecipeError(f"--out {out}: a device profile is a .yaml file (devices/NAME.yaml)")
    connection = parse_target(target)
    if python:
        connection["python"] = python
    if accept_new:
        connection["known_hosts"] = "accept-new"
    if workdir:
        connection["workdir"] = workdir
    if native or benchmark_model or benchmark_app:  # no Python there: the runtimes' own tools
        if python:
            raise RecipeError("--python and --native: a native device runs its benchmark tools, not a Python")
        connection["mode"] = "native"
        connection.update(
            {k: v for k, v in (("benchmark_model", benchmark_model), ("benchmark_app", benchmark_app)) if v}
        )
    name = out.stem
    probing = DeviceProfile.model_validate(
        {
            "name": name,
            "description": f"being probed: {target}",
            "cpu": {"model": "detect", "arch": "detect", "cores": "detect"},
            "memory_mb": "detect",
            "runtimes": [],
            "connection": connection,
        }
    )
    facts = RUNNERS.get(connection["runner"])().probe(probing)
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    data = profile_from_probe(facts, connection, when=when)
    DeviceProfile.model_validate({"name": name, **data})  # what is written loads
    text = (
        f"# Written by `edgecompress devices probe {target}` on {when}: what the device reported.\n"
        "# Edit description, threads or runtimes freely; `probed` is the record of the probe.\n"
        + yaml.safe_dump(data, sort_keys=False, width=110)
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out, data
