"""What a build ran on and with: installed package versions and the machine, for reports and lock files."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

#: Distributions whose versions every report and lock file records.
RECORDED_PACKAGES = (
    "edgecompress",
    "torch",
    "torch-pruning",
    "litert-torch",
    "ai-edge-litert",
    "litert-converter",
    "ai-edge-quantizer",
    "openvino",
    "nncf",
    "numpy",
    "scikit-learn",
    "pydantic",
)


def package_versions(*names: str) -> dict[str, str]:
    """Installed versions of `names` (distribution names); missing packages are left out."""
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def machine_info() -> dict[str, Any]:
    """CPU model, ISA flags that matter for inference speed, cores, OS and Python of this machine."""
    from edgecompress.runtimes.probe import cpu_info

    cpu, isa = cpu_info()
    return {
        "cpu_model": cpu,
        "isa_flags": isa,
        "cores": os.cpu_count(),
        "arch": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
    }
