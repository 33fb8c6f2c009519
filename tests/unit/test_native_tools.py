"""The runtimes' own benchmark tools (connection.mode: native): their output read across versions, their
command lines. The outputs below are in the shapes those tools print (TF 1.x/2.x benchmark_model, Android
logcat, litert-benchmark of ai-edge-litert 2.x, benchmark_app before 2022.1 and of 2026.4)."""

from __future__ import annotations

import pytest

from edgecompress.runners import native
from edgecompress.specs import Connection

TF1 = """\
Loaded model /data/local/tmp/m.tflite
count=50 first=249042 curr=250889 min=247067 max=254474 avg=249684 std=1442
Inference timings in us: Init: 16242, First inference: 360262, Warmup (avg): 304586, Inference (avg): 249684
Peak memory footprint (MB): init=4.92969 overall=138.809
"""

TF2 = """\
INFO: Initialized session in 17.187ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=1 curr=3512391

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798

INFO: Inference timings in us: Init: 17187, First inference: 3512391, Warmup (avg): 3.51239e+06, Inference (avg): 2.95034e+06
INFO: Memory footprint delta from the start of the tool (MB): init=4.21094 overall=46.0859
"""

NEW = """\
INFO: count=9 first=87112 curr=51629 min=51629 max=87112 avg=58147.4 std=11478 p5=51629 median=51962 p95=87112
INFO: count=1000 first=52162 curr=49785 min=49088 max=686105 avg=63743.2 std=60716 p5=49620 median=51891 p95=68628
INFO: Inference timings in us: Init: 119515, First inference: 87112, Warmup (avg): 58147.4, Inference (avg): 63743.2
INFO: Memory footprint delta from the start of the tool (MB): init=55.4961 overall=55.4961
INFO: Overall peak memory footprint (MB) via periodic monitoring: 61.25
"""

LOGCAT = """\
I tflite  : count=25 first=140000 curr=145528 min=140100 max=150000 avg=145528 std=100 p5=140100 median=145000 p95=149000
I tflite  : Inference timings in us: Init: 92318, First inference: 187533, Warmup (avg): 211669, Inference (avg): 145528
"""

LITERT_BENCHMARK = """\
========================================
 BENCHMARK RESULTS
========================================
Model initialization:  1.25 ms
Warmup (first):        0.08 ms
Warmup (avg):          0.01 ms (200 runs)
Inference (avg):       0.33 ms (200 runs)
Inference (min):       0.29 ms
Inference (max):       4.11 ms
Inference (median):    0.31 ms
Inference (std):       0.29 ms
Inference (p5):        0.30 ms
Inference (p95):       0.35 ms
Throughput:            33.40 MB/s
Fully accelerated:     True
========================================
INFO: [accelerator_registry.cc:43] DestroyAccelerator: ptr=0x56494ab86390, name=CpuAccelerator
"""

BENCHMARK_APP_2026 = """\
[Step 2/11] Loading OpenVINO Runtime
[ INFO ] OpenVINO:
[ INFO ] Build ................................. 2026.4.1-22982-e213a147257-releases/2026/4
[ INFO ] Read model took 13.10 ms
[ INFO ] Compile model took 79.06 ms
[ INFO ] First inference took 4.46 ms
[Step 11/11] Dumping statistics report
[ INFO ] Execution Devices: ['CPU']
[ INFO ] Count:            200 iterations
[ INFO ] Duration:         8.19 ms
[ INFO ] Latency:
[ INFO ]    Median:        18.17 us
[ INFO ]    Average:       27.35 us
[ INFO ]    Min:           15.03 us
[ INFO ]    Max:           1776.88 us
[ INFO ] Throughput:   25387.21 FPS
"""

BENCHMARK_APP_2021 = """\
[ INFO ] Read network took 20.11 ms
[ INFO ] Load network took 150.00 ms
Count:      1200 iterations
Duration:   10012.33 ms
Latency:    8.21 ms
Throughput: 121.85 FPS
"""


@pytest.mark.parametrize(
    ("text", "p50", "runs", "load", "first", "peak"),
    [
        (TF1, 249.684, 50, 16.242, 360.262, 138.809),
        (TF2, 2950.34, 50, 17.187, 3512.391, 46.0859),
        (NEW, 51.891, 1000, 119.515, 87.112, 61.25),
        (LOGCAT, 145.0, 25, 92.318, 187.533, None),
        (LITERT_BENCHMARK, 0.31, 200, 1.25, 0.08, None),
    ],
    ids=["tf1", "tf2-enotation", "median-and-peak", "logcat", "litert-benchmark"],
)
def test_benchmark_model_output_of_every_version(text, p50, runs, load, first, peak):
    got = native.parse("litert", text)
    assert got["p50_ms"] == pytest.approx(p50) and got["runs"] == runs
    assert got["load_ms"] == pytest.approx(load) and got["first_ms"] == pytest.approx(first)
    assert got["peak_mb"] == (pytest.approx(peak) if peak is not None else None)
    assert got["min_ms"] <= got["p50_ms"] <= got["max_ms"]


def test_the_timed_line_not_the_warmup_one():
    got = native.parse("litert", NEW)
    assert got["runs"] == 1000 and got["p95_ms"] == pytest.approx(68.628)  # not the warm-up's 9 runs


def test_benchmark_app_output_of_both_eras():
    new = native.parse("openvino", BENCHMARK_APP_2026)
    assert new["p50_ms"] == pytest.approx(0.01817) and new["max_ms"] == pytest.approx(1.77688)
    assert new["version"] == "2026.4.1" and new["runs"] == 200
    assert new["load_ms"] == pytest.approx(13.10 + 79.06) and new["first_ms"] == pytest.approx(4.46)
    assert new["peak_mb"] is None  # benchmark_app reports no memory: None, not 0
    old = native.parse("openvino", BENCHMARK_APP_2021)
    assert old["p50_ms"] == pytest.approx(8.21) and old["runs"] == 1200 and old["version"] is None


@pytest.mark.parametrize("runtime", ["litert", "openvino"])
def test_output_without_a_timing_is_an_error(runtime):
    with pytest.raises(ValueError, match="no"):
        native.parse(runtime, "ERROR: Could not open 'm.tflite'.\nSegmentation fault\n")


def test_command_lines():
    cpp = native.tool_arguments(
        "/data/local/tmp/benchmark_model",
        "litert",
        "/t/m.tflite",
        threads=4,
        runs=100,
        warmup_seconds=1.0,
        inference_precision=None,
    )
    assert cpp[0] == "/data/local/tmp/benchmark_model" and "--graph=/t/m.tflite" in cpp
    assert "--num_threads=4" in cpp and "--num_runs=100" in cpp and "--warmup_min_secs=1" in cpp
    py = native.tool_arguments(
        "/opt/venv/bin/litert-benchmark",
        "litert",
        "/t/m.tflite",
        threads=2,
        runs=50,
        warmup_seconds=1.0,
        inference_precision=None,
    )
    assert py[1:3] == ["--model", "/t/m.tflite"] and py[py.index("--warmup_runs") + 1] == "50"
    ov = native.tool_arguments(
        "benchmark_app",
        "openvino",
        "/t/m.xml",
        threads=1,
        runs=200,
        warmup_seconds=1.0,
        inference_precision="f32",
        shape=[1, 3, 224, 224],
    )
    assert ov[ov.index("-shape") + 1] == "[1,3,224,224]" and ov[ov.index("-infer_precision") + 1] == "f32"
    assert ov[ov.index("-hint") + 1] == "none" and ov[ov.index("-nstreams") + 1] == "1"


def test_default_tools():
    phone = Connection(runner="adb", serial="X", mode="native")
    assert native.tool_of(phone, "litert") == native.ANDROID_BENCHMARK_MODEL
    board = Connection(runner="ssh", host="pi5", mode="native", benchmark_app="/opt/ov/benchmark_app")
    assert native.tool_of(board, "litert") == "benchmark_model"
    assert native.tool_of(board, "openvino") == "/opt/ov/benchmark_app"


def test_remote_arguments_are_quoted_but_home_is_expanded():
    from edgecompress.runners.base import quote

    assert quote("~/venv/bin/python") == "~/venv/bin/python"
    assert quote("~/my venv/python") == "~/'my venv/python'"
    assert quote("/x; rm -rf /") == "'/x; rm -rf /'" and quote("~user/x") == "'~user/x'"


def test_the_shell_probe_of_a_phone():
    """PROBE_SCRIPT's sections as an arm64 phone prints them (Features from /proc/cpuinfo, getprop)."""
    text = "\n".join(
        [
            "@@cpuinfo",
            "processor\t: 0",
            "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp",
            "CPU implementer\t: 0x41",
            "Hardware\t: Qualcomm Technologies, Inc SM8250",
            "@@meminfo",
            "MemTotal:        7819912 kB",
            "@@arch",
            "aarch64",
            "@@kernel",
            "4.19.157-perf",
            "@@cores",
            "8",
            "@@os-release",
            "@@android",
            "13",
            "@@governor",
            "schedutil",
            "@@thermal",
            "thermal_zone0|cpu-0-0-usr|41200",
            "thermal_zone1|battery|",
            "@@energy",
            "android-battery|/sys/class/power_supply/battery",
            "@@litert",
            "/data/local/tmp/benchmark_model",
            "@@openvino",
            "@@end",
        ]
    )
    facts = native.parse_probe(text)
    assert facts["cpu_model"] == "Qualcomm Technologies, Inc SM8250" and facts["arch"] == "aarch64"
    assert facts["isa_flags"] == ["asimd", "asimdhp", "asimddp"] and facts["cores"] == 8
    assert facts["memory_mb"] == 7636 and facts["os"] == "Android 13" and facts["governor"] == "schedutil"
    assert facts["thermal_zones"][0] == {"zone": "thermal_zone0", "type": "cpu-0-0-usr", "temp_c": 41.2}
    assert facts["thermal_zones"][1]["temp_c"] is None
    assert facts["runtimes"] == {
        "litert": "benchmark_model (native: /data/local/tmp/benchmark_model)",
        "openvino": None,
    }
    assert (
        facts["energy_sources"][0]["source"] == "android-battery"
        and not facts["energy_sources"][0]["readable"]
    )
    with pytest.raises(ValueError, match="did not run to its end"):
        native.parse_probe(text.replace("@@end", ""))
