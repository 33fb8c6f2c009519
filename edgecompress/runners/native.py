"""`connection.mode: native`: the runtimes' own benchmark tools run on the device instead of measure.py (a
phone or board without Python): LiteRT's `benchmark_model` (the C++ tool of tensorflow/lite/tools/benchmark,
pushed to the device) or ai-edge-litert's `litert-benchmark`, and OpenVINO's `benchmark_app`. This module
builds their command lines and reads their output, across versions, into the fields of `Measurements`.

`benchmark_model` prints, by version (all latencies in microseconds, possibly in e-notation, each line
possibly prefixed "INFO: " or, in logcat, "I tflite  : "):
- "count=50 first=.. curr=.. min=.. max=.. avg=.. std=.." for the timed run (a warm-up's "count=1 curr=.."
  comes before it); builds since 2.x add " p5=.. median=.. p95=..";
- "Inference timings in us: Init: I, First inference: F, Warmup (avg): W, Inference (avg): A";
- memory, as "Peak memory footprint (MB): init=.. overall=..", "Memory footprint delta from the start of
  the tool (MB): init=.. overall=..", or with --report_peak_memory_footprint "Overall peak memory footprint
  (MB) via periodic monitoring: P".
`litert-benchmark` (Python) prints "Model initialization: X ms", "Warmup (first): X ms", "Inference (median):
X ms", ... with two decimals: a 0.2 ms model is read to 5%.
`benchmark_app` prints "[ INFO ] Build ....... 2026.4.1-..." (the version), "Read model took X ms", "Compile
model took X ms", "First inference took X ms", then "Latency:" with "Median: X ms" (also Average/Min/Max;
2022.1 and later) or, before, one "Latency: X ms" line, and "Throughput: T FPS". It reports no memory.

What a native tool does not report is None in the Measurements (peak memory of benchmark_app and
litert-benchmark, the op profile), never a made-up number; energy is the power model's estimate only (the
sampler is part of measure.py), and parity on the device needs measure.py (a tool returns no outputs).
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

#: The tool each runtime's native mode runs, when the device's connection names none.
DEFAULT_TOOLS = {"litert": "benchmark_model", "openvino": "benchmark_app"}
#: Where Android's LiteRT tool conventionally lies (TF's docs: adb push benchmark_model /data/local/tmp).
ANDROID_BENCHMARK_MODEL = "/data/local/tmp/benchmark_model"

_PREFIX = re.compile(r"^\s*(?:\[\s*\w+\s*\]|INFO:|[IWE] tflite\s*:)\s*", re.M)
_COUNT = re.compile(r"count=(\d+)((?:[ \t]+\w+=[-\d.e+]+)+)")
_PAIR = re.compile(r"(\w+)=([-\d.e+]+)")
_US = 1000.0


def _plain(text: str) -> str:
    """The tool's output without its log prefixes ("[ INFO ] ", "INFO: ", logcat's "I tflite  : ")."""
    return _PREFIX.sub("", text.replace("\r", ""))


def configured_tool(connection: Any, runtime: str) -> str | None:
    """The tool the device's connection names for `runtime` (its field is the tool's default name)."""
    return getattr(connection, DEFAULT_TOOLS[runtime])


def tool_of(connection: Any, runtime: str) -> str:
    """The benchmark tool `runtime`'s native mode runs on the device (the connection's, else the default)."""
    given = configured_tool(connection, runtime)
    if given:
        return given
    if runtime == "litert" and connection.runner == "adb":
        return ANDROID_BENCHMARK_MODEL
    if connection.runner == "local":  # this machine: the PATH, else this Python's environment (pip's tools)
        import shutil
        import sys
        from pathlib import Path

        here = Path(sys.executable).parent
        names = [DEFAULT_TOOLS[runtime], *(["litert-benchmark"] if runtime == "litert" else [])]
        for name in names:
            found = shutil.which(name) or (str(here / name) if (here / name).is_file() else None)
            if found:
                return found
    return DEFAULT_TOOLS[runtime]


def is_python_litert_tool(tool: str) -> bool:
    return PurePosixPath(tool).name.startswith("litert-benchmark")


def tool_arguments(
    tool: str,
    runtime: str,
    model: str,
    *,
    threads: int,
    runs: int,
    warmup_seconds: float,
    inference_precision: str | None,
    shape: list[int] | None = None,
) -> list[str]:
    """The tool's command line for `model` (its path on the device): `threads` threads, at least `runs`
    timed runs after a warm-up of `warmup_seconds` (benchmark_model) or of `runs` runs (litert-benchmark; it
    has no time-based warm-up); OpenVINO in latency mode (one stream, no hint) at `inference_precision`,
    its input of `shape` (benchmark_app refuses a dynamic input without one)."""
    if runtime == "openvino":
        return [
            tool,
            "-m",
            model,
            "-d",
            "CPU",
            "-hint",
            "none",
            "-nstreams",
            "1",
            "-nthreads",
            str(threads),
            "-niter",
            str(runs),
            *(["-shape", "[" + ",".join(map(str, shape)) + "]"] if shape else []),
            *(["-infer_precision", inference_precision] if inference_precision else []),
        ]
    if is_python_litert_tool(tool):
        return [
            tool,
            "--model",
            model,
            "--num_threads",
            str(threads),
            "--num_runs",
            str(runs),
            "--warmup_runs",
            str(max(runs, 1)),
        ]
    return [
        tool,
        f"--graph={model}",
        f"--num_threads={threads}",
        f"--num_runs={runs}",
        "--min_secs=0",
        "--warmup_runs=1",
        f"--warmup_min_secs={warmup_seconds:g}",
        "--report_peak_memory_footprint=true",
    ]


def parse_benchmark_model(text: str) -> dict[str, Any]:
    """Latency (ms), load, first inference and memory from `benchmark_model` (any version) or
    `litert-benchmark` output; ValueError when it holds no timing."""
    text = _plain(text)
    if "Inference (median):" in text:
        return _parse_litert_benchmark(text)
    counts = [(int(n), {k: float(v) for k, v in _PAIR.findall(rest)}) for n, rest in _COUNT.findall(text)]
    timed = [(n, stats) for n, stats in counts if "avg" in stats]
    if not timed:
        raise ValueError("no 'count=... avg=...' statistics line in benchmark_model's output")
    count, stats = timed[-1]  # the timed run (a warm-up's line comes first)
    out: dict[str, Any] = {
        "runs": count,
        "p50_ms": stats.get("median", stats["avg"]) / _US,
        "median_reported": "median" in stats,
        "mean_ms": stats["avg"] / _US,
        "std_ms": stats.get("std", 0.0) / _US,
        "min_ms": stats.get("min", stats["avg"]) / _US,
        "max_ms": stats.get("max", stats["avg"]) / _US,
        "p95_ms": stats["p95"] / _US if "p95" in stats else None,
        "load_ms": 0.0,
        "first_ms": stats.get("first", 0.0) / _US,
    }
    timings = re.search(r"Inference timings in us:(.*)", text)
    if timings:
        fields = {
            k.strip(): float(v) for k, v in re.findall(r"([A-Za-z ()]+):\s*([-\d.e+]+)", timings.group(1))
        }
        out["load_ms"] = fields.get("Init", 0.0) / _US
        out["first_ms"] = fields.get("First inference", out["first_ms"] * _US) / _US
    peak = re.search(r"Overall peak memory footprint \(MB\)[^:]*:\s*([\d.e+]+)", text)
    footprint = re.search(
        r"(?:Peak memory footprint|Memory footprint delta)[^:]*:\s*init=[\d.e+]+\s+overall=([\d.e+]+)", text
    )
    out["peak_mb"] = float(peak.group(1)) if peak else float(footprint.group(1)) if footprint else None
    out["version"] = None
    return out


def _parse_litert_benchmark(text: str) -> dict[str, Any]:
    def ms(label: str) -> float | None:
        found = re.search(rf"{re.escape(label)}:\s*([-\d.e+]+)\s*ms", text)
        return float(found.group(1)) if found else None

    median = ms("Inference (median)")
    if median is None:
        raise ValueError("no 'Inference (median)' line in litert-benchmark's output")
    runs = re.search(r"Inference \(avg\):\s*[-\d.e+]+\s*ms\s*\((\d+) runs\)", text)
    return {
        "runs": int(runs.group(1)) if runs else 0,
        "p50_ms": median,
        "median_reported": True,
        "mean_ms": ms("Inference (avg)") or median,
        "std_ms": ms("Inference (std)") or 0.0,
        "min_ms": ms("Inference (min)") or median,
        "max_ms": ms("Inference (max)") or median,
        "p95_ms": ms("Inference (p95)"),
        "load_ms": ms("Model initialization") or 0.0,
        "first_ms": ms("Warmup (first)") or 0.0,
        "peak_mb": None,
        "version": None,
    }


def parse_benchmark_app(text: str) -> dict[str, Any]:
    """Latency (ms), load, first inference and version from OpenVINO `benchmark_app` output of any version;
    ValueError when it holds no latency."""
    text = _plain(text)

    def ms(value: str, unit: str) -> float:
        return float(value) / (1000.0 if unit == "us" else 1.0)

    values: dict[str, float] = {}
    block = re.search(r"Latency:\s*\n((?:\s*(?:Median|Average|AVG|Min|MIN|Max|MAX)\s*:.*\n?)+)", text)
    if block:
        for name, value, unit in re.findall(r"(\w+)\s*:\s*([\d.]+)\s*(ms|us)", block.group(1)):
            values[name.capitalize().replace("Avg", "Average")] = ms(value, unit)
    if "Median" not in values:
        single = re.search(r"Latency:\s*([\d.]+)\s*(ms|us)", text)
        if not single:
            raise ValueError("no latency in benchmark_app's output")
        values["Median"] = ms(single.group(1), single.group(2))
    p50 = values["Median"]
    count = re.search(r"Count:\s*(\d+)\s*iterations", text)
    build = re.search(r"Build\s*\.+\s*(\d{4}\.\d+(?:\.\d+)?)", text)

    def took(what: str) -> float:
        found = re.search(rf"{what} took\s*([\d.]+)\s*(ms|us)", text)
        return ms(found.group(1), found.group(2)) if found else 0.0

    return {
        "runs": int(count.group(1)) if count else 0,
        "p50_ms": p50,
        "median_reported": True,
        "mean_ms": values.get("Average", p50),
        "std_ms": 0.0,
        "min_ms": values.get("Min", p50),
        "max_ms": values.get("Max", p50),
        "p95_ms": None,
        "load_ms": took("Read model") + took("Compile model"),
        "first_ms": took("First inference"),
        "peak_mb": None,
        "version": build.group(1) if build else None,
    }


def parse(runtime: str, text: str) -> dict[str, Any]:
    return parse_benchmark_app(text) if runtime == "openvino" else parse_benchmark_model(text)


def latency_fields(parsed: dict[str, Any], runs: int) -> dict[str, Any]:
    """LatencyStats fields from a parsed tool output: its median (p50), mean, min, max and std; the tools
    report no p90/p99, so those carry their highest reported percentile (p95, else the max)."""
    p50 = parsed["p50_ms"]
    high = parsed.get("p95_ms") or parsed.get("max_ms") or p50
    return {
        "runs": parsed.get("runs") or runs,
        "p50_ms": p50,
        "p90_ms": high,
        "p99_ms": parsed.get("max_ms") or high,
        "mean_ms": parsed.get("mean_ms") or p50,
        "std_ms": parsed.get("std_ms") or 0.0,
        "min_ms": parsed.get("min_ms") or p50,
        "max_ms": parsed.get("max_ms") or p50,
    }


# ------------------------------------------------------------------------------------------------ probing

#: What `edgecompress devices probe --native` runs on a device without Python (POSIX sh: Android's mksh and
#: toybox, busybox, dash): each section after a marker line, read back by `parse_probe`. $1, $2: the tools.
PROBE_SCRIPT = r"""
s() { echo "@@$1"; }
s cpuinfo; cat /proc/cpuinfo 2>/dev/null
s meminfo; cat /proc/meminfo 2>/dev/null
s arch; uname -m
s kernel; uname -r
s cores; nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || grep -c ^processor /proc/cpuinfo
s os-release; cat /etc/os-release 2>/dev/null
s android; getprop ro.build.version.release 2>/dev/null
s governor; cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null
s thermal; for z in /sys/class/thermal/thermal_zone*; do [ -d "$z" ] && echo "${z##*/}|$(cat "$z/type" 2>/dev/null)|$(cat "$z/temp" 2>/dev/null)"; done
s energy; for z in /sys/class/powercap/intel-rapl:*; do [ -r "$z/energy_uj" ] && echo "rapl|$z"; done
for h in /sys/class/hwmon/hwmon*; do n=$(cat "$h/name" 2>/dev/null); case "$n" in ina3221*|ina2*) echo "ina3221|$h|$n";; esac; done
[ -r /sys/class/power_supply/battery/current_now ] && echo "android-battery|/sys/class/power_supply/battery"
command -v vcgencmd >/dev/null 2>&1 && echo "rpi5-pmic|$(command -v vcgencmd)"
s litert; command -v "$1" 2>/dev/null || { [ -x "$1" ] && echo "$1"; }
s openvino; command -v "$2" 2>/dev/null || { [ -x "$2" ] && echo "$2"; }
s end
"""


def parse_probe(text: str) -> dict[str, Any]:
    """PROBE_SCRIPT's output as the facts probe.py reports (python None; runtimes: the tools found)."""
    from edgecompress.runtimes.probe import parse_cpuinfo

    sections: dict[str, list[str]] = {}
    current = None
    for line in text.replace("\r", "").splitlines():
        if line.startswith("@@"):
            current = line[2:].strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    if "end" not in sections:
        raise ValueError("the probe did not run to its end")

    def first(name: str) -> str:
        return next((x.strip() for x in sections.get(name, []) if x.strip()), "")

    cpu_model, isa = parse_cpuinfo("\n".join(sections.get("cpuinfo", [])))
    memory = next(
        (int(x.split()[1]) // 1024 for x in sections.get("meminfo", []) if x.startswith("MemTotal:")), None
    )
    pretty = next(
        (
            x.split("=", 1)[1].strip('"')
            for x in sections.get("os-release", [])
            if x.startswith("PRETTY_NAME=")
        ),
        "",
    )
    android = first("android")
    zones = []
    for line in sections.get("thermal", []):
        zone, _, rest = line.partition("|")
        kind, _, temp = rest.partition("|")
        value = temp.strip()
        zones.append(
            {
                "zone": zone,
                "type": kind,
                "temp_c": int(value) / 1000 if value.lstrip("-").isdigit() else None,
            }
        )
    energy = []
    for line in sections.get("energy", []):
        parts = line.split("|")
        entry = {"source": parts[0], "where": parts[1] if len(parts) > 1 else "", "readable": False}
        if len(parts) > 2:
            entry["chip"] = parts[2]
        entry["note"] = "native mode: energy is estimated (measuring needs measure.py's sampler)"
        energy.append(entry)
    cores = first("cores")
    tools = {r: first(r) or None for r in ("litert", "openvino")}
    return {
        "cpu_model": cpu_model,
        "arch": first("arch"),
        "cores": int(cores) if cores.isdigit() else 1,
        "isa_flags": isa,
        "memory_mb": memory,
        "os": f"Android {android}" if android else pretty or "Linux",
        "kernel": first("kernel"),
        "python": None,
        "runtimes": {r: f"{PurePosixPath(t).name} (native: {t})" if t else None for r, t in tools.items()},
        "governor": first("governor") or None,
        "thermal_zones": zones,
        "energy_sources": energy,
    }
