"""Where edgecompress keeps what it computes once and reuses across builds.

`cache_root()` is `$EDGECOMPRESS_CACHE`, else `$XDG_CACHE_HOME/edgecompress`, else `~/.cache/edgecompress`,
read on every call (never at import), so a test or a build can point it elsewhere. Below it:
`latency/<device>/` holds the latency tables (`edgecompress.latency.table`) and `datasets/` the generated
built-in datasets (`edgecompress.datasets_deformed`).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The cache folder (see the module docstring); it is not created here."""
    explicit = os.environ.get("EDGECOMPRESS_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "edgecompress"
