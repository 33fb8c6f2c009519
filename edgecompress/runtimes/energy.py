"""Energy readers and the arithmetic of energy per inference. Standard library only: measure.py loads it from
its own directory on the device, where the readings are taken (a board's rails are read on the board).

Readers, one interface (`read()` -> a Reading):
- **rapl**: Linux powercap counters, `/sys/class/powercap/intel-rapl:N/energy_uj` (µJ, cumulative), which wrap
  at `max_energy_range_uj` (Documentation/power/powercap/powercap.rst). Package domains (`intel-rapl:N`,
  not their subzones) are summed.
- **ina3221**: Jetson's INA3221 (and INA2xx) hwmon rails: `inN_input` bus voltage in mV, `currN_input` current
  in mA, `inN_label` the rail's name (Documentation/hwmon/ina3221.rst). The board's input rail (`VDD_IN`,
  `POM_5V_IN`) when labelled, else the sum of the channels.
- **android-battery**: `/sys/class/power_supply/battery/current_now` and `voltage_now`, µA and µV by the ABI
  (Documentation/ABI/testing/sysfs-class-power) — some vendors report mA and mV, and the sign of the current
  differs between vendors: the unit is told by the magnitude, the sign dropped (the phone must run on battery,
  unplugged).
- **rpi5-pmic**: Raspberry Pi 5's PMIC through `vcgencmd pmic_read_adc`: lines `NAME_A current(i)=xA` and
  `NAME_V volt(j)=yV`; the power is the sum over the rails that have both.
- **meter**: an external meter (INA219/INA226 on I2C, a USB meter) given as a command that prints watts.
- **perf**: the kernel's RAPL PMU through perf's power events (`/sys/bus/event_source/devices/power/events`:
  energy-psys when the platform has it, else energy-pkg plus energy-ram), counted system-wide by
  `perf stat -a -x,` for the window (the tool scales them to joules; needs perf and, as a non-root user,
  kernel.perf_event_paranoid <= 0 or CAP_PERFMON). A window reader: `begin()` / `end()` -> joules.

A counter (rapl) gives energy directly; a power reader is sampled in a thread and integrated (trapezoids).
Energy per inference over a timed window = (E - idle power × window time) / inferences: `net`; `gross` keeps
the idle part. Idle is measured before and after the windows and averaged.
"""

from __future__ import annotations

import itertools
import re
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

SOURCES = ("rapl", "ina3221", "android-battery", "rpi5-pmic", "meter", "perf")


class EnergyUnavailable(RuntimeError):
    """The source cannot be read here (missing files, permission, command failing)."""


@dataclass(frozen=True)
class Reading:
    """Cumulative counters in joules (`counters`, one per domain, each with its wrap range in `wraps`), or a
    power in watts (`watts`). Each counter wraps on its own, so deltas are taken per counter, then summed."""

    counters: tuple[float, ...] | None = None
    wraps: tuple[float | None, ...] = ()
    watts: float | None = None

    @property
    def joules(self) -> float | None:
        return sum(self.counters) if self.counters is not None else None


# ------------------------------------------------------------------------------------------------ arithmetic


def counter_delta(start: float, end: float, wrap: float | None) -> float:
    """Energy between two readings of a cumulative counter that wraps to 0 after `wrap` (RAPL)."""
    if end >= start:
        return end - start
    if not wrap:
        raise ValueError(f"the counter went backwards ({start} -> {end}) and its wrap range is unknown")
    return wrap - start + end


def counter_energy(readings: list[float], wrap: float | None) -> float:
    """Energy over successive counter readings; read often enough that it wraps at most once between two."""
    return sum(counter_delta(a, b, wrap) for a, b in itertools.pairwise(readings))


def integrate_power(samples: list[tuple[float, float]]) -> float:
    """Joules from (seconds, watts) samples, trapezoids between them."""
    return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in itertools.pairwise(samples))


@dataclass(frozen=True)
class Window:
    seconds: float
    joules: float
    runs: int = 0  # inferences in the window; 0 for an idle window

    @property
    def watts(self) -> float:
        return self.joules / self.seconds if self.seconds > 0 else 0.0


def per_inference(windows: list[Window], idle: list[Window]) -> dict[str, float | list[float] | int]:
    """Energy per inference from timed windows and idle windows (before and after): gross (all energy / runs)
    and net (minus idle power × time), each window's net, the idle power."""
    if not windows or not idle:
        raise ValueError("energy per inference needs timed windows and idle windows")
    idle_watts = sum(w.joules for w in idle) / sum(w.seconds for w in idle)
    nets = [(w.joules - idle_watts * w.seconds) / w.runs * 1000 for w in windows]
    gross = [w.joules / w.runs * 1000 for w in windows]
    return {
        "net_mj": _median(nets),
        "gross_mj": _median(gross),
        "net_mj_windows": nets,
        "idle_watts": idle_watts,
        "windows": len(windows),
    }


def _median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


# ---------------------------------------------------------------------------------------------------- readers


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise EnergyUnavailable(f"cannot read {path}: {exc.strerror or exc}") from None


class RaplReader:
    """Sum of the package domains' energy counters."""

    kind = "counter"

    def __init__(self, root: Path = Path("/sys")) -> None:
        base = root / "class" / "powercap"
        self.zones = sorted(z for z in base.glob("intel-rapl:*") if re.fullmatch(r"intel-rapl:\d+", z.name))
        if not self.zones:
            raise EnergyUnavailable(f"no RAPL package domains under {base}")
        self.wraps = tuple(
            int(_read(z / "max_energy_range_uj")) / 1e6 if (z / "max_energy_range_uj").exists() else None
            for z in self.zones
        )

    def read(self) -> Reading:
        return Reading(
            counters=tuple(int(_read(z / "energy_uj")) / 1e6 for z in self.zones), wraps=self.wraps
        )


class HwmonRailReader:
    """INA3221 / INA2xx hwmon channels: V (mV) × I (mA)."""

    kind = "power"
    INPUT_RAILS = ("VDD_IN", "POM_5V_IN", "VIN_SYS_5V0")

    def __init__(self, root: Path = Path("/sys")) -> None:
        monitors = [
            h
            for h in sorted((root / "class" / "hwmon").glob("hwmon*"))
            if (h / "name").exists() and _read(h / "name").startswith(("ina3221", "ina2"))
        ]
        self.channels: list[tuple[Path, Path]] = []
        for h in monitors:
            for volt in sorted(h.glob("in*_input")):
                n = volt.name[2:].split("_")[0]
                if (h / f"curr{n}_input").exists():
                    label = _read(h / f"in{n}_label") if (h / f"in{n}_label").exists() else ""
                    if label in self.INPUT_RAILS:
                        self.channels = [(volt, h / f"curr{n}_input")]
                        break
                    self.channels.append((volt, h / f"curr{n}_input"))
            else:
                continue
            break
        if not self.channels:
            raise EnergyUnavailable(
                f"no INA3221/INA2xx voltage and current channels under {root}/class/hwmon"
            )

    def read(self) -> Reading:
        return Reading(watts=sum(int(_read(v)) * int(_read(i)) / 1e6 for v, i in self.channels))


class AndroidBatteryReader:
    """current_now × voltage_now of the battery, unit by magnitude, sign dropped."""

    kind = "power"

    def __init__(self, root: Path = Path("/sys")) -> None:
        self.base = root / "class" / "power_supply" / "battery"
        if not (self.base / "current_now").exists():
            raise EnergyUnavailable(f"no {self.base}/current_now")

    @staticmethod
    def watts(current: int, voltage: int) -> float:
        amps = abs(current) / (1e6 if abs(current) >= 20_000 else 1e3)  # µA by the ABI; mA on some vendors
        volts = voltage / (1e6 if voltage >= 100_000 else 1e3)  # µV; mV on some vendors
        return amps * volts

    def read(self) -> Reading:
        return Reading(
            watts=self.watts(int(_read(self.base / "current_now")), int(_read(self.base / "voltage_now")))
        )


PMIC_LINE = re.compile(r"^\s*(\S+)_([AV])\s+(?:current|volt)\(\d+\)=([-\d.]+)[AV]\s*$")


def pmic_watts(text: str) -> float:
    """Total power from `vcgencmd pmic_read_adc` output: Σ current × voltage over rails that have both."""
    amps: dict[str, float] = {}
    volts: dict[str, float] = {}
    for line in text.splitlines():
        m = PMIC_LINE.match(line)
        if m:
            (amps if m.group(2) == "A" else volts)[m.group(1)] = float(m.group(3))
    rails = amps.keys() & volts.keys()
    if not rails:
        raise EnergyUnavailable("vcgencmd pmic_read_adc printed no rail with both current and voltage")
    return sum(amps[r] * volts[r] for r in rails)


class CommandReader:
    """A command that prints a power in watts (the last number of its output), run for every sample."""

    kind = "power"
    interval = 0.25  # a process per sample: not faster

    def __init__(self, command: str, parse=None) -> None:
        self.argv = shlex.split(command)
        self.parse = parse or _last_number
        self.read()  # fails here, before any timing, when the command does not work

    def read(self) -> Reading:
        try:
            out = subprocess.run(self.argv, capture_output=True, text=True, timeout=10, check=True).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            raise EnergyUnavailable(f"`{' '.join(self.argv)}` failed: {exc}") from None
        return Reading(watts=self.parse(out))


def parse_perf_csv(text: str) -> dict[str, tuple[float | None, str]]:
    """`perf stat -x,` output: event -> (value, unit); value None for '<not counted>' / '<not supported>'.
    Lines: value,unit,event,run time,percentage[,metric value,metric unit]."""
    out: dict[str, tuple[float | None, str]] = {}
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) < 3 or not fields[2]:
            continue
        value, unit, event = fields[0].strip(), fields[1].strip(), fields[2].strip()
        try:
            out[event] = (float(value), unit)
        except ValueError:
            if value.startswith("<"):
                out[event] = (None, unit)
    return out


#: The window PerfReader counts over when opened, to find counters that read nothing.
PROBE_SECONDS = 0.2


class PerfReader:
    """perf's power events, counted system-wide over each window (a window reader: begin() / end())."""

    kind = "window"

    def __init__(self, root: Path = Path("/sys"), perf: str = "perf") -> None:
        import shutil

        pmu = root / "bus" / "event_source" / "devices" / "power" / "events"
        have = {e.name for e in pmu.glob("energy-*") if "." not in e.name} if pmu.is_dir() else set()
        names = (
            ["energy-psys"]
            if "energy-psys" in have
            else [e for e in ("energy-pkg", "energy-ram") if e in have]
        )
        if not names:
            raise EnergyUnavailable(
                f"no perf power events under {pmu} (no RAPL PMU: the CPU, the kernel or the VM exposes none)"
            )
        found = shutil.which(perf)
        if found is None:
            raise EnergyUnavailable(f"{perf} is not installed (Debian: apt install linux-perf)")
        self.events = [f"power/{n}/" for n in names]
        self.argv = [found, "stat", "-a", "-x", ",", "-e", ",".join(self.events)]
        self._proc: subprocess.Popen | None = None
        self.begin()  # fails here, before any timing, when perf cannot count them
        time.sleep(PROBE_SECONDS)
        if self.end() <= 0.0:  # a VM may list the PMU's events and count nothing on them
            raise EnergyUnavailable(
                f"perf counts 0 J on {', '.join(self.events)} over {PROBE_SECONDS:g} s: the power PMU is listed "
                "but its counters do not count here (a VM?)"
            )

    def begin(self) -> None:
        self._proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        time.sleep(0.05)  # perf opens its counters before it counts: a 10 s window loses < 1%

    def end(self) -> float:
        import signal

        proc, self._proc = self._proc, None
        if proc is None:
            raise EnergyUnavailable("perf was not counting")
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise EnergyUnavailable("perf stat did not stop") from None
        counts = parse_perf_csv(err)
        missing = [e for e in self.events if counts.get(e, (None, ""))[0] is None]
        if missing:
            lines = [line.strip() for line in err.splitlines() if line.strip()]
            # perf points at a bad event with "\___ <reason>" under the line that names it
            reason = next((line.split("\\___", 1)[1].strip() for line in lines if "\\___" in line), "")
            said = (lines[0] if lines else "no output") + (f" ({reason})" if reason else "")
            raise EnergyUnavailable(f"perf could not count {', '.join(missing)}: {said}")
        units = {counts[e][1] for e in self.events}
        if units != {"Joules"}:
            raise EnergyUnavailable(
                f"perf counted the power events in {', '.join(sorted(units))}, not Joules"
            )
        return sum(counts[e][0] or 0.0 for e in self.events)


def _last_number(text: str) -> float:
    numbers = re.findall(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", text)
    if not numbers:
        raise EnergyUnavailable(f"the meter command printed no number: {text.strip()[:80]!r}")
    return float(numbers[-1])


def open_reader(source: str, *, command: str | None = None, root: Path = Path("/sys")):
    """The reader for `source` (one of SOURCES); EnergyUnavailable when it cannot be read here."""
    if source == "rapl":
        return RaplReader(root)
    if source == "ina3221":
        return HwmonRailReader(root)
    if source == "android-battery":
        return AndroidBatteryReader(root)
    if source == "rpi5-pmic":
        return CommandReader(command or "vcgencmd pmic_read_adc", parse=pmic_watts)
    if source == "meter":
        if not command:
            raise EnergyUnavailable("source meter needs a command that prints watts")
        return CommandReader(command)
    if source == "perf":
        return PerfReader(root)
    raise ValueError(f"unknown energy source '{source}'; valid: {', '.join(SOURCES)}")


# ---------------------------------------------------------------------------------------------------- sampling


@dataclass
class Sampler:
    """Reads `reader` every `interval` seconds in a thread between start() and stop(); stop() returns the
    window's joules (counter: wrapped deltas; power: trapezoids)."""

    reader: object
    interval: float = 0.05
    _samples: list[tuple[float, Reading]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _error: BaseException | None = None

    def start(self) -> None:
        if getattr(self.reader, "kind", "") == "window":  # it counts the window itself (perf)
            self.reader.begin()
            self._samples, self._error = [(time.perf_counter(), Reading())], None
            return
        self._samples, self._error = [(time.perf_counter(), self.reader.read())], None
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._samples.append((time.perf_counter(), self.reader.read()))
            except BaseException as exc:  # said by stop()
                self._error = exc
                return

    def stop(self) -> tuple[float, float]:
        """(seconds, joules) of the window."""
        if getattr(self.reader, "kind", "") == "window":
            joules = self.reader.end()
            return time.perf_counter() - self._samples[0][0], joules
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise EnergyUnavailable(f"reading energy failed during the window: {self._error}")
        self._samples.append((time.perf_counter(), self.reader.read()))
        seconds = self._samples[-1][0] - self._samples[0][0]
        first = self._samples[0][1]
        if first.counters is not None:  # each domain's counter wraps on its own
            joules = sum(
                counter_energy([r.counters[i] for _, r in self._samples], first.wraps[i])
                for i in range(len(first.counters))
            )
        else:
            joules = integrate_power([(t, r.watts) for t, r in self._samples])
        return seconds, joules


def measure_windows(run, reader, *, window_seconds: float, windows: int, interval: float = 0.05) -> dict:
    """Idle window, `windows` windows of back-to-back `run()` calls of at least `window_seconds` each, idle
    window again; energy per inference (see per_inference) with every window's numbers."""
    sampler = Sampler(reader, interval=interval)
    idle_seconds = max(window_seconds / 2, 0.2)

    def idle() -> Window:
        sampler.start()
        time.sleep(idle_seconds)
        seconds, joules = sampler.stop()
        return Window(seconds, joules)

    before = idle()
    timed = []
    for _ in range(windows):
        sampler.start()
        start, runs = time.perf_counter(), 0
        while time.perf_counter() - start < window_seconds:
            run()
            runs += 1
        seconds, joules = sampler.stop()
        timed.append(Window(seconds, joules, runs))
    after = idle()
    result = per_inference(timed, [before, after])
    result["window_seconds"] = [w.seconds for w in timed]
    result["window_runs"] = [w.runs for w in timed]
    result["idle_watts_before_after"] = [before.watts, after.watts]
    return result
