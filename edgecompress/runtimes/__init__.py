"""Running exported artifacts on their runtimes.

`sessions.py` loads and runs an artifact (LiteRT or OpenVINO) and `measure.py` profiles one in a fresh
process. Both need only numpy and the runtime, import nothing from edgecompress, and are copied as they are
to remote devices; see `MEASURE_SCRIPT`.
"""

from __future__ import annotations

from pathlib import Path

#: The standalone profiling script; it loads sessions.py from its own directory.
MEASURE_SCRIPT = Path(__file__).resolve().parent / "measure.py"
SESSIONS_MODULE = Path(__file__).resolve().parent / "sessions.py"
