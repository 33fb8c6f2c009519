"""Running exported artifacts on their runtimes.

`sessions.py` loads and runs an artifact (LiteRT or OpenVINO), `measure.py` profiles one in a fresh
process and `op_profiles.py` aggregates the runtimes' per-op profiler output. The three need only numpy and
the runtime, import nothing from edgecompress, and are copied as they are to remote devices
(`DEVICE_SCRIPTS`); measure.py loads the other two from its own directory.
"""

from __future__ import annotations

from pathlib import Path

#: The standalone profiling script; it loads sessions.py from its own directory.
MEASURE_SCRIPT = Path(__file__).resolve().parent / "measure.py"
SESSIONS_MODULE = Path(__file__).resolve().parent / "sessions.py"
OP_PROFILES_MODULE = Path(__file__).resolve().parent / "op_profiles.py"
#: What a device is (stdlib only): `edgecompress devices probe` runs it; measure.py takes cpu_info from it.
PROBE_SCRIPT = Path(__file__).resolve().parent / "probe.py"
#: Energy readers and the energy-per-inference arithmetic (stdlib only), run on the device.
ENERGY_MODULE = Path(__file__).resolve().parent / "energy.py"
#: Everything a device needs to run measure.py and probe.py: copy these into one directory.
DEVICE_SCRIPTS = (MEASURE_SCRIPT, SESSIONS_MODULE, OP_PROFILES_MODULE, PROBE_SCRIPT, ENERGY_MODULE)
