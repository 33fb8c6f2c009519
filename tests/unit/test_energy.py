"""Energy per inference: the arithmetic with known inputs, and the readers against sysfs trees and command
outputs in the formats the real devices produce (each format's source in the test)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from edgecompress.gates import _energy_gate
from edgecompress.profiling import Energy, Measurements
from edgecompress.runners.base import energy_of, thermal_of
from edgecompress.runtimes import energy as E
from edgecompress.runtimes import probe
from tests.conftest import measurements


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


# ------------------------------------------------------------------------------------------------ arithmetic


def test_counter_wraparound():
    assert E.counter_delta(10.0, 25.0, wrap=100.0) == 15.0
    assert E.counter_delta(90.0, 5.0, wrap=100.0) == 15.0  # wrapped once
    assert E.counter_energy([90.0, 98.0, 3.0, 10.0], wrap=100.0) == 20.0
    with pytest.raises(ValueError, match="wrap range is unknown"):
        E.counter_delta(90.0, 5.0, wrap=None)


def test_integrating_sampled_power():
    # 2 W for 1 s then a ramp to 4 W over 1 s: 2 J + 3 J
    samples = [(0.0, 2.0), (0.5, 2.0), (1.0, 2.0), (1.5, 3.0), (2.0, 4.0)]
    assert E.integrate_power(samples) == pytest.approx(5.0)
    assert E.integrate_power([(0.0, 5.0)]) == 0.0


def test_energy_per_inference_net_and_gross():
    idle = [E.Window(seconds=5.0, joules=10.0), E.Window(seconds=5.0, joules=12.0)]  # 2.2 W idle
    windows = [
        E.Window(seconds=10.0, joules=52.0, runs=1000),  # (52 - 22) / 1000 = 30 mJ net, 52 gross
        E.Window(seconds=10.0, joules=50.0, runs=1000),  # 28 net
        E.Window(seconds=10.0, joules=56.0, runs=1000),  # 34 net
    ]
    r = E.per_inference(windows, idle)
    assert r["idle_watts"] == pytest.approx(2.2)
    assert r["net_mj"] == pytest.approx(30.0) and r["gross_mj"] == pytest.approx(52.0)
    assert r["net_mj_windows"] == pytest.approx([30.0, 28.0, 34.0]) and r["windows"] == 3
    with pytest.raises(ValueError):
        E.per_inference(windows, [])


def test_sampler_integrates_a_power_reader_in_a_thread():
    class Constant:
        def read(self):
            return E.Reading(watts=3.0)

    sampler = E.Sampler(Constant(), interval=0.01)
    sampler.start()
    time.sleep(0.2)
    seconds, joules = sampler.stop()
    assert joules == pytest.approx(3.0 * seconds)


def test_measure_windows_against_a_counter(tmp_path):
    """A RAPL tree whose counter advances 1 mJ per inference and not at all when idle: net = gross = 1 mJ."""
    _write(
        tmp_path,
        {"class/powercap/intel-rapl:0/energy_uj": "0\n", "class/powercap/intel-rapl:0/name": "package-0"},
    )
    counter = tmp_path / "class/powercap/intel-rapl:0/energy_uj"
    state = {"uj": 0}

    def run() -> None:  # replaced whole, as sysfs reads never see half a number
        state["uj"] += 1000
        (tmp_path / "next").write_text(f"{state['uj']}\n")
        os.replace(tmp_path / "next", counter)
        time.sleep(0.001)

    r = E.measure_windows(run, E.RaplReader(tmp_path), window_seconds=0.2, windows=2, interval=0.02)
    assert r["net_mj"] == pytest.approx(1.0, rel=1e-6) and r["gross_mj"] == pytest.approx(1.0, rel=1e-6)
    assert r["idle_watts"] == 0.0 and r["windows"] == 2 and all(n > 10 for n in r["window_runs"])


# ---------------------------------------------------------------------------------------------------- readers


def test_rapl_sums_package_domains_and_knows_their_wrap(tmp_path):
    # Linux Documentation/power/powercap/powercap.rst: intel-rapl:N (package), intel-rapl:N:M (subzone),
    # energy_uj and max_energy_range_uj in microjoules
    _write(
        tmp_path,
        {
            "class/powercap/intel-rapl:0/energy_uj": "1500000\n",
            "class/powercap/intel-rapl:0/max_energy_range_uj": "262143328850\n",
            "class/powercap/intel-rapl:1/energy_uj": "500000\n",
            "class/powercap/intel-rapl:1/max_energy_range_uj": "262143328850\n",
            "class/powercap/intel-rapl:0:0/energy_uj": "999999999\n",  # core subzone: inside package 0
        },
    )
    reading = E.RaplReader(tmp_path).read()
    assert reading.joules == pytest.approx(2.0) and reading.counters == pytest.approx((1.5, 0.5))
    assert reading.wraps == pytest.approx((262143.32885, 262143.32885))


def test_two_packages_wrap_on_their_own(tmp_path):
    """Package 0 wraps (near its range, then past 0) while package 1 counts on: the energy is each package's
    own delta, not the delta of their sum against the sum of their ranges."""
    zones = {"0": ["262143000000", "500000"], "1": ["1000000", "3000000"]}  # µJ, two readings each
    for z in zones:
        _write(tmp_path, {f"class/powercap/intel-rapl:{z}/max_energy_range_uj": "262143328850\n"})

    class Stepper(E.RaplReader):
        step = 0

        def read(self):
            for z, values in zones.items():
                _write(tmp_path, {f"class/powercap/intel-rapl:{z}/energy_uj": values[self.step] + "\n"})
            self.step += 1
            return super().read()

    sampler = E.Sampler(Stepper(tmp_path), interval=60)  # two readings only: start() and stop()
    sampler.start()
    _, joules = sampler.stop()
    # package 0: 262143.32885 - 262143.0 + 0.5 = 0.82885 J; package 1: 2.0 J
    assert joules == pytest.approx(0.82885 + 2.0)
    with pytest.raises(E.EnergyUnavailable, match="no RAPL package domains"):
        E.RaplReader(tmp_path / "nothing")


def test_ina3221_prefers_the_input_rail(tmp_path):
    # Documentation/hwmon/ina3221.rst: inN_input bus voltage (mV), currN_input (mA), inN_label; Jetson
    # Orin names its input rail VDD_IN
    _write(
        tmp_path,
        {
            "class/hwmon/hwmon3/name": "ina3221\n",
            "class/hwmon/hwmon3/in1_label": "VDD_IN\n",
            "class/hwmon/hwmon3/in1_input": "5080\n",
            "class/hwmon/hwmon3/curr1_input": "1230\n",
            "class/hwmon/hwmon3/in2_label": "VDD_CPU_GPU_CV\n",
            "class/hwmon/hwmon3/in2_input": "5072\n",
            "class/hwmon/hwmon3/curr2_input": "400\n",
        },
    )
    assert E.HwmonRailReader(tmp_path).read().watts == pytest.approx(5.080 * 1.230)
    (tmp_path / "class/hwmon/hwmon3/in1_label").write_text("VDD_SOC\n")  # no input rail: the channels summed
    assert E.HwmonRailReader(tmp_path).read().watts == pytest.approx(5.080 * 1.230 + 5.072 * 0.400)


@pytest.mark.parametrize(
    ("current", "voltage", "watts"),
    [
        ("-350000", "3900000", 0.35 * 3.9),  # µA, µV as the ABI says; negative while discharging (Pixel)
        ("350000", "3900000", 0.35 * 3.9),  # positive while discharging (some Samsung kernels)
        ("-350", "3900", 0.35 * 3.9),  # mA, mV (some vendor kernels)
    ],
)
def test_android_battery_units_and_sign(tmp_path, current, voltage, watts):
    # Documentation/ABI/testing/sysfs-class-power: current_now in µA, voltage_now in µV
    _write(
        tmp_path,
        {
            "class/power_supply/battery/current_now": current,
            "class/power_supply/battery/voltage_now": voltage,
        },
    )
    assert E.AndroidBatteryReader(tmp_path).read().watts == pytest.approx(watts)


PMIC = """\
     3V7_WL_SW_A current(0)=0.00000000A
       3V3_SYS_A current(1)=0.05270130A
       1V8_SYS_A current(2)=0.16983870A
      DDR_VDD2_A current(3)=0.03513420A
        VDD_CORE_A current(7)=0.75143240A
     3V7_WL_SW_V volt(8)=3.67476000V
       3V3_SYS_V volt(9)=3.30622000V
       1V8_SYS_V volt(10)=1.79830400V
      DDR_VDD2_V volt(11)=1.11080000V
        VDD_CORE_V volt(15)=0.72545850V
        EXT5V_V volt(24)=5.15587000V
       BATT_V volt(25)=0.00000000V
"""


def test_rpi5_pmic_sums_rails_with_current_and_voltage():
    # `vcgencmd pmic_read_adc` on a Raspberry Pi 5 (format as printed by firmware 2024-2025; the rails
    # with only a voltage, EXT5V and BATT, carry no current and are left out)
    expected = 0.0527013 * 3.30622 + 0.1698387 * 1.798304 + 0.0351342 * 1.1108 + 0.7514324 * 0.7254585
    assert E.pmic_watts(PMIC) == pytest.approx(expected)
    with pytest.raises(E.EnergyUnavailable):
        E.pmic_watts('error=1 error_msg="Command not registered"')


def test_meter_command_prints_watts(tmp_path):
    reader = E.open_reader("meter", command=f"{sys.executable} -c \"print('P = 2.75 W')\"")
    assert reader.read().watts == 2.75
    with pytest.raises(E.EnergyUnavailable, match="failed"):
        E.open_reader("meter", command="/nonexistent/meter")
    with pytest.raises(E.EnergyUnavailable, match="printed no number"):
        E.open_reader("meter", command="echo none")


# ------------------------------------------------------------------------------------------ labels and gates


def test_measured_and_estimated_are_labelled():
    measured = energy_of(
        {
            "source": "rapl",
            "net_mj": 1.5,
            "gross_mj": 2.0,
            "net_mj_windows": [1.4, 1.5, 1.7],
            "idle_watts": 3.0,
            "windows": 3,
        },
        estimated_mj=9.9,
    )
    assert measured.label == "measured (rapl)" and measured.mj_per_inference == 1.5
    assert measured.spread_mj == (1.4, 1.7) and measured.gross_mj_per_inference == 2.0
    estimated = energy_of(None, estimated_mj=0.8)
    assert estimated.label == "estimated (power model)" and estimated.mj_per_inference == 0.8
    assert energy_of(None, None) is None


def _m(energy: Energy | None) -> Measurements:
    return measurements("pi5", 1.0, energy=energy)


def test_an_estimate_fails_the_energy_gate_unless_allowed():
    estimate = Energy(kind="estimated", source="power model", mj_per_inference=0.5)
    refused = _energy_gate("pi5/tflite-int8", _m(estimate), 1.0, allow_estimated=False)
    assert not refused.passed and refused.value is None
    assert refused.message.startswith("max_energy_mj [pi5/tflite-int8]: only estimated (power model) 0.5 mJ;")
    allowed = _energy_gate("pi5/tflite-int8", _m(estimate), 1.0, allow_estimated=True)
    assert allowed.passed and "(estimated (power model))" in allowed.message
    measured = _energy_gate(
        "pi5/tflite-int8", _m(Energy(kind="measured", source="rapl", mj_per_inference=1.2)), 1.0, False
    )
    assert not measured.passed and measured.message.startswith(
        "max_energy_mj [pi5/tflite-int8]: 1.2 (measured (rapl))"
    )
    assert not _energy_gate("pi5/x", _m(None), 1.0, True).passed


def test_throttling_is_flagged(tmp_path):
    before = {"temp_c": 55.0, "mhz": 2400.0, "throttle_count": 3}
    hot = thermal_of({"before": before, "after": {"temp_c": 82.0, "mhz": 1500.0, "throttle_count": 3}})
    assert hot.throttled and hot.note == "CPU 0 at 1500 MHz after, 2400 before"
    counted = thermal_of({"before": before, "after": {"temp_c": 70.0, "mhz": 2400.0, "throttle_count": 5}})
    assert counted.throttled and counted.note == "2 thermal throttle events"
    cool = thermal_of({"before": before, "after": {"temp_c": 60.0, "mhz": 2350.0, "throttle_count": 3}})
    assert not cool.throttled and cool.after_c == 60.0
    # read from sysfs: zones in millidegrees, scaling_cur_freq in kHz (Documentation/cpu-freq/cpufreq-stats.rst)
    _write(
        tmp_path,
        {
            "class/thermal/thermal_zone0/temp": "61500\n",
            "class/thermal/thermal_zone1/temp": "47000\n",
            "devices/system/cpu/cpu0/cpufreq/scaling_cur_freq": "2400000\n",
            "devices/system/cpu/cpu0/thermal_throttle/core_throttle_count": "2\n",
            "devices/system/cpu/cpu1/thermal_throttle/core_throttle_count": "1\n",
        },
    )
    assert probe.thermal_state(tmp_path) == {"temp_c": 61.5, "mhz": 2400.0, "throttle_count": 3}
    assert probe.thermal_state(tmp_path / "none") == {"temp_c": None, "mhz": None, "throttle_count": None}


def test_perf_csv_lines():
    # perf stat -x, : value,unit,event,run time,percentage[,metric value,metric unit] (tools/perf/Documentation/
    # perf-stat.txt, "CSV FORMAT"); the first line as perf 6.1 printed it for task-clock here
    text = (
        "404.02,msec,task-clock,404015114,100.00,2.000,CPUs utilized\n"
        "12.35,Joules,power/energy-pkg/,1000602117,100.00,,\n"
        "<not supported>,Joules,power/energy-ram/,0,100.00,,\n"
    )
    got = E.parse_perf_csv(text)
    assert got["task-clock"] == (404.02, "msec") and got["power/energy-pkg/"] == (12.35, "Joules")
    assert got["power/energy-ram/"] == (None, "Joules")


def test_perf_needs_power_events(tmp_path):
    with pytest.raises(E.EnergyUnavailable, match="no perf power events"):
        E.PerfReader(tmp_path)
    _write(tmp_path, {"bus/event_source/devices/power/events/energy-pkg": "event=0x02\n"})
    with pytest.raises(E.EnergyUnavailable, match="not installed"):
        E.PerfReader(tmp_path, perf="no-such-perf")
