"""The perf energy source with the real perf: where this machine has the RAPL PMU it counts joules over a
window; where it has none (most VMs), or lists one whose counters read nothing (some VMs), opening the source
says so in one line, naming perf's own reason."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from edgecompress.runtimes import energy as E

pytestmark = pytest.mark.integration

PMU = Path("/sys/bus/event_source/devices/power/events")


def test_perf_counts_or_says_why():
    if shutil.which("perf") is None:
        pytest.fail("perf is not installed: `make test` installs linux-perf")
    if PMU.is_dir():  # a RAPL PMU: a real count, or (a VM listing the PMU) one line saying it counts nothing
        try:
            reader = E.PerfReader()
        except E.EnergyUnavailable as exc:
            assert "counters do not count here" in str(exc) or "perf could not count" in str(exc), exc
            return
        sampler = E.Sampler(reader)
        sampler.start()
        time.sleep(0.5)
        seconds, joules = sampler.stop()
        assert seconds >= 0.5 and joules > 0
    else:
        with pytest.raises(E.EnergyUnavailable, match="no perf power events"):
            E.PerfReader()


def test_perf_without_the_pmu_it_was_told_of(tmp_path):
    """A sysfs tree that lists energy-pkg on a machine whose kernel has no power PMU: the real perf refuses
    the event, and the source says perf's reason before any timing."""
    if shutil.which("perf") is None:
        pytest.fail("perf is not installed: `make test` installs linux-perf")
    if PMU.is_dir():
        pytest.skip("this machine has the power PMU: perf would count (test_perf_counts_or_says_why)")
    events = tmp_path / "bus/event_source/devices/power/events"
    events.mkdir(parents=True)
    (events / "energy-pkg").write_text("event=0x02\n")
    with pytest.raises(E.EnergyUnavailable, match=r"perf could not count power/energy-pkg/: .*PMU"):
        E.PerfReader(tmp_path)
