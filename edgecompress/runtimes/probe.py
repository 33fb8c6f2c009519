"""What a device is: CPU, ISA features, memory, OS, runtimes, governor, thermal zones and the energy sources
it can read. Standard library only (no numpy): `edgecompress devices probe` copies it to a board and runs it
with the board's Python; measure.py loads it from its own directory for `cpu_info`.

    python probe.py    # one JSON object on stdout
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
from pathlib import Path

#: ISA features that decide which kernels a runtime can use (x86 then ARM spellings in /proc/cpuinfo).
ISA_FLAGS = (
    "sse4_1",
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "amx_fp16",
    "neon",
    "asimd",
    "asimdhp",
    "asimddp",
    "asimdfhm",
    "i8mm",
    "bf16",
    "sve",
    "sve2",
    "sme",
)


def cpu_info() -> tuple[str, list[str]]:
    """CPU model name and the ISA_FLAGS this CPU has, from /proc/cpuinfo (platform fallbacks elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    model, flags = parse_cpuinfo(text)
    if not model:
        try:
            model = Path("/sys/firmware/devicetree/base/model").read_text().strip("\x00\n ")
        except OSError:
            model = platform.processor() or platform.machine()
    return model, flags


def parse_cpuinfo(text: str) -> tuple[str, list[str]]:
    """CPU model name ('' when it names none) and ISA_FLAGS from the text of a /proc/cpuinfo (this machine's,
    or a device's read over its connection)."""
    fields: dict[str, str] = {}
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features"):
            flags.update(value.split())
        else:
            fields.setdefault(key, value.strip())
    # x86 names the CPU in "model name" ("model" is a number there); ARM boards say "Hardware" or "Model".
    model = next((fields[k] for k in ("model name", "hardware", "cpu model") if fields.get(k)), "")
    if not model and not fields.get("model", "").isdigit():
        model = fields.get("model", "")
    return model, [f for f in ISA_FLAGS if f in flags]


def _read(path: Path | str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def memory_mb() -> int | None:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return None


def os_name() -> str:
    for line in (_read("/etc/os-release") or "").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    android = _read("/system/build.prop")
    if android:
        release = next(
            (x.split("=", 1)[1] for x in android.splitlines() if x.startswith("ro.build.version.release=")),
            "",
        )
        return f"Android {release}".strip()
    return f"{platform.system()} {platform.release()}"


def runtime_versions() -> dict[str, str | None]:
    """Installed runtimes and numpy, by package metadata (nothing is imported)."""
    import importlib.util
    from importlib import metadata

    def version(*names: str) -> str | None:
        for name in names:
            try:
                return metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
        return None

    litert = None
    if importlib.util.find_spec("ai_edge_litert") is not None:
        litert = "ai-edge-litert " + (version("ai-edge-litert") or "unknown")
    elif importlib.util.find_spec("tflite_runtime") is not None:
        litert = "tflite-runtime " + (version("tflite-runtime", "tflite_runtime") or "unknown")
    openvino = None
    if importlib.util.find_spec("openvino") is not None:
        openvino = "openvino " + (version("openvino") or "unknown")
    return {"litert": litert, "openvino": openvino, "numpy": version("numpy")}


def thermal_zones(root: Path = Path("/sys/class/thermal")) -> list[dict]:
    zones = []
    for zone in sorted(root.glob("thermal_zone*")):
        temp = _read(zone / "temp")
        zones.append(
            {
                "zone": zone.name,
                "type": _read(zone / "type") or "",
                "temp_c": int(temp) / 1000 if temp and temp.lstrip("-").isdigit() else None,
            }
        )
    return zones


def thermal_state(sys_root: Path = Path("/sys")) -> dict:
    """The hottest thermal zone (°C), CPU 0's current frequency (MHz) and the kernel's throttle count (x86
    `thermal_throttle`), each None where not readable: measure.py reads it before and after timing."""
    temps = [z["temp_c"] for z in thermal_zones(sys_root / "class" / "thermal") if z["temp_c"] is not None]
    freq = _read(sys_root / "devices" / "system" / "cpu" / "cpu0" / "cpufreq" / "scaling_cur_freq")
    counts = [
        _read(p)
        for p in (sys_root / "devices" / "system" / "cpu").glob("cpu*/thermal_throttle/core_throttle_count")
    ]
    return {
        "temp_c": max(temps) if temps else None,
        "mhz": int(freq) / 1000 if freq and freq.isdigit() else None,
        "throttle_count": sum(int(c) for c in counts if c and c.isdigit()) if counts else None,
    }


def energy_sources(sys_root: Path = Path("/sys")) -> list[dict]:
    """Energy or power readings this account can read: RAPL powercap counters, INA3221/INA2xx hwmon rails
    (Jetson, boards with a shunt monitor), the Android battery's current and voltage, the Raspberry Pi 5
    PMIC through vcgencmd. Each: source, where, readable."""
    found = []
    for zone in sorted((sys_root / "class" / "powercap").glob("intel-rapl:*")):
        energy = zone / "energy_uj"
        if energy.exists():
            found.append(
                {
                    "source": "rapl",
                    "where": str(energy),
                    "name": _read(zone / "name") or zone.name,
                    "readable": _read(energy) is not None,
                }
            )
    for hwmon in sorted((sys_root / "class" / "hwmon").glob("hwmon*")):
        name = _read(hwmon / "name") or ""
        if name.startswith(("ina3221", "ina2")):  # the ina3221 source reads INA2xx rails too
            found.append(
                {
                    "source": "ina3221",
                    "chip": name,
                    "where": str(hwmon),
                    "readable": bool(list(hwmon.glob("*_input"))),
                }
            )
    battery = sys_root / "class" / "power_supply" / "battery"
    if (battery / "current_now").exists():
        readable = _read(battery / "current_now") is not None and _read(battery / "voltage_now") is not None
        found.append({"source": "android-battery", "where": str(battery), "readable": readable})
    if shutil.which("vcgencmd"):
        found.append({"source": "rpi5-pmic", "where": shutil.which("vcgencmd"), "readable": True})
    power = sys_root / "bus" / "event_source" / "devices" / "power" / "events"
    if power.is_dir() and any(power.glob("energy-*")):
        perf = shutil.which("perf")
        found.append({"source": "perf", "where": str(power), "readable": perf is not None, "perf": perf})
    return found


def probe() -> dict:
    cpu_model, isa = cpu_info()
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return {
        "cpu_model": cpu_model,
        "arch": platform.machine(),
        "cores": cores,
        "isa_flags": isa,
        "memory_mb": memory_mb(),
        "os": os_name(),
        "kernel": platform.release(),
        "python": {"path": sys.executable, "version": platform.python_version()},
        "runtimes": runtime_versions(),
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "thermal_zones": thermal_zones(),
        "energy_sources": energy_sources(),
    }


if __name__ == "__main__":
    print(json.dumps(probe()))
