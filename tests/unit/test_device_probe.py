"""The device probe's readers against sysfs trees laid out as the real devices lay them out, and the profile
written from a probe."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecompress.device_probe import parse_target, profile_from_probe
from edgecompress.errors import RecipeError
from edgecompress.runtimes import probe
from edgecompress.specs import DeviceProfile


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_energy_sources_read_as_the_devices_lay_them_out(tmp_path):
    _write(
        tmp_path,
        {
            # Linux powercap (Documentation/power/powercap/powercap.rst): intel-rapl:0 package, :0:0 its core
            "class/powercap/intel-rapl:0/name": "package-0\n",
            "class/powercap/intel-rapl:0/energy_uj": "123456789\n",
            "class/powercap/intel-rapl:0:0/name": "core\n",
            "class/powercap/intel-rapl:0:0/energy_uj": "2345\n",
            # Jetson INA3221 (drivers/hwmon/ina3221.c): name, in<N>_input (mV), curr<N>_input (mA)
            "class/hwmon/hwmon1/name": "ina3221\n",
            "class/hwmon/hwmon1/in1_input": "5000\n",
            "class/hwmon/hwmon1/curr1_input": "400\n",
            "class/hwmon/hwmon0/name": "coretemp\n",
            # Android (power_supply class, Documentation/ABI/testing/sysfs-class-power): µA and µV
            "class/power_supply/battery/current_now": "-350000\n",
            "class/power_supply/battery/voltage_now": "3900000\n",
        },
    )
    found = probe.energy_sources(tmp_path)
    assert [(e["source"], e.get("name"), e["readable"]) for e in found] == [
        ("rapl", "package-0", True),
        ("rapl", "core", True),
        ("ina3221", None, True),
        ("android-battery", None, True),
    ]
    assert probe.energy_sources(tmp_path / "none") == []


def test_thermal_zones(tmp_path):
    _write(
        tmp_path,
        {
            # Raspberry Pi 5: one zone, millidegrees Celsius
            "thermal_zone0/type": "cpu-thermal\n",
            "thermal_zone0/temp": "48750\n",
            "thermal_zone1/type": "gpu-thermal\n",
            "thermal_zone1/temp": "unreadable\n",
        },
    )
    assert probe.thermal_zones(tmp_path) == [
        {"zone": "thermal_zone0", "type": "cpu-thermal", "temp_c": 48.75},
        {"zone": "thermal_zone1", "type": "gpu-thermal", "temp_c": None},
    ]


def test_parse_target():
    assert parse_target("ssh://pi5") == {"runner": "ssh", "host": "pi5"}
    assert parse_target("ssh://pi@10.0.0.5:2222") == {"runner": "ssh", "host": "pi@10.0.0.5:2222"}
    assert parse_target("local") == {"runner": "local"}
    assert parse_target("adb://R5CT1234") == {"runner": "adb", "serial": "R5CT1234"}
    for bad in ("pi5", "adb://", "usb://x"):
        with pytest.raises(RecipeError, match="a target is ssh://HOST"):
            parse_target(bad)


FACTS = {
    "cpu_model": "Cortex-A76",
    "arch": "aarch64",
    "cores": 4,
    "isa_flags": ["neon", "asimd", "asimddp"],
    "memory_mb": 8063,
    "os": "Debian GNU/Linux 12 (bookworm)",
    "kernel": "6.6.31+rpt-rpi-2712",
    "python": {"path": "/home/pi/venv/bin/python", "version": "3.11.2"},
    "runtimes": {"litert": "ai-edge-litert 2.3.0", "openvino": None, "numpy": "2.2.0"},
    "governor": "ondemand",
    "thermal_zones": [{"zone": "thermal_zone0", "type": "cpu-thermal", "temp_c": 48.75}],
    "energy_sources": [{"source": "rpi5-pmic", "where": "/usr/bin/vcgencmd", "readable": True}],
}


def test_a_profile_from_a_probe_loads():
    connection = {"runner": "ssh", "host": "pi5", "python": "/home/pi/venv/bin/python"}
    data = profile_from_probe(FACTS, connection, when="2026-12-05T10:00:00+00:00")
    device = DeviceProfile.model_validate({"name": "pi5", **data})
    assert device.cpu.arch == "aarch64" and device.cpu.int8_dot_product is True
    assert device.runtimes == ["litert"] and device.threads == 4 and device.memory_mb == 8063
    assert device.description == "Cortex-A76, 4 cores, Debian GNU/Linux 12 (bookworm) (probed 2026-12-05)"
    assert (
        device.probed["governor"] == "ondemand"
        and device.probed["energy_sources"][0]["source"] == "rpi5-pmic"
    )
    x86 = profile_from_probe(
        FACTS | {"arch": "x86_64", "isa_flags": ["avx2", "fma"]}, connection, when="2026-12-05"
    )
    assert x86["cpu"]["int8_dot_product"] is False
    with pytest.raises(RecipeError, match="architecture 'riscv64'"):
        profile_from_probe(FACTS | {"arch": "riscv64"}, connection, when="2026-12-05")
