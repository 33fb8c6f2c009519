"""report.html of a real build: written beside report.md, self-contained, opening with the artifact to ship,
and rendered by headless Chromium without errors."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from edgecompress.pipeline import run_build
from edgecompress.profiling import Energy
from edgecompress.report_html import choose_artifacts, render_html
from tests.conftest import EXAMPLES

pytestmark = pytest.mark.integration

RECIPE = f"""\
name: html
seed: 1
model: {{source: {EXAMPLES}:tiny_cnn, input_shape: [1, 1, 16, 16]}}
data: {{dataset: digits, image_size: [16, 16], normalize: {{mean: [0.5], std: [0.5]}}}}
stages:
  - {{type: train, epochs: 1, lr: 0.005}}
  - {{type: quantize, mode: ptq, calibration_samples: 64}}
export:
  - {{format: tflite, precision: fp32}}
  - {{format: tflite, precision: int8}}
  - {{format: openvino, precision: fp32}}
profile: {{runs: 20, warmup_seconds: 0.05, rounds: 2}}
gates: {{max_size_kb: 10000}}
"""

#: A URL that a browser would fetch: in src/href, a CSS @import or url().
FETCHED = re.compile(
    r"""(?:\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|@import|url\(\s*["']?\s*(?:https?:)?//)""", re.I
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("html")
    recipe = root / "recipe.yaml"
    recipe.write_text(RECIPE)
    out = root / "out"
    report = run_build(recipe, out=out, verbosity=0)
    return out, report


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail(
            "chromium is not installed: `make test` installs it (its system-packages target: "
            "apt-get install chromium)"
        )
    return found


def _run_chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    return subprocess.run(
        [
            _chromium(),
            "--headless=new",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_report_html_is_written_and_self_contained(built):
    out, report = built
    assert all(g.passed for g in report.gates) and report.gates
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in html
    assert not FETCHED.search(html), "nothing is fetched: no URL in src/href/@import/url()"
    assert "<script" not in html
    # it opens with the answer: the fastest export on desktop that passes the gates
    exports = [a for a in report.artifacts if a.role == "export" and "desktop" in a.measurements]
    assert {a.name for a in exports} == {"tflite-fp32", "tflite-int8", "openvino-fp32"}
    fastest = min(exports, key=lambda a: a.measurements["desktop"].latency.p50_ms)
    (choice,) = choose_artifacts(report)
    assert choice.chosen.name == fastest.name and choice.runner_up is not None
    body = html[html.index("<body>") :]
    first_section = body[: body.index("</section>")]
    assert 'id="answer"' in first_section and f"desktop: ship <code>{fastest.name}</code>" in first_section
    assert f"p50 {fastest.measurements['desktop'].latency.p50_ms:.3f} ms" in first_section
    assert f"Runner-up: {choice.runner_up.name}" in first_section
    # the steps, the artifacts side by side, plots inline
    steps = html[html.index('id="steps-table"') : html.index('id="artifacts"')]
    assert all(f"<td>{s.name}" in steps for s in report.steps) and "images/s" in steps
    table = html[html.index('id="artifacts-table"') : html.index('id="latency"')]
    assert all(f"<code>{a.name}</code>" in table for a in report.artifacts)
    assert "peak RSS MiB" in table and "energy / inference" in table
    assert html.count("<svg") >= 2, "a latency chart and per-op charts"
    assert "top " in html[html.index('id="ops"') :], "a per-op chart of a timed profile"
    assert 'id="gates-table"' in html and "✔ pass" in html
    assert 'id="devices-table"' in html and 'id="versions-table"' in html


def test_energy_labels_in_the_page(built):
    _, report = built
    first, second, *rest = report.artifacts
    estimated = Energy(kind="estimated", source="power model", mj_per_inference=1.2)
    measured = Energy(kind="measured", source="rapl", mj_per_inference=0.8, windows=3, spread_mj=(0.7, 0.9))

    def with_energy(a, energy):
        m = a.measurements["desktop"].model_copy(update={"energy": energy})
        return a.model_copy(update={"measurements": {"desktop": m}})

    copy = report.model_copy(
        update={"artifacts": [with_energy(first, estimated), with_energy(second, measured), *rest]}
    )
    html = render_html(copy)
    table = html[html.index('id="artifacts-table"') : html.index('id="latency"')]
    assert (
        '<td class="energy estimated">≈ 1.200 mJ<br><span class="small">estimated (power model)</span>'
        in table
    )
    assert (
        '<td class="energy measured">0.800 mJ (windows 0.700–0.900)<br><span class="small">measured (rapl)'
        in table
    )
    # what the build itself wrote: desktop has no power model, so no figure, and none passed off as measured
    real = render_html(report)
    real_table = real[real.index('id="artifacts-table"') : real.index('id="latency"')]
    assert "measured (" not in real_table


def test_chromium_renders_it(built, tmp_path):
    from PIL import Image

    out, _ = built
    page = (out / "report.html").resolve().as_uri()
    png = tmp_path / "report.png"
    shot = _run_chromium(
        tmp_path, "--hide-scrollbars", "--window-size=1280,3000", f"--screenshot={png}", page
    )
    assert png.is_file(), f"no screenshot (exit {shot.returncode}): {shot.stderr[-2000:]}"
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] == 1280
        colours = image.convert("RGB").getcolors(maxcolors=1 << 24)
    assert colours is not None and len(colours) > 16, "a page with text, tables and plots, not a blank"

    dump = _run_chromium(tmp_path, "--enable-logging=stderr", "--v=0", "--dump-dom", page)
    assert dump.returncode == 0, dump.stderr[-2000:]
    dom = dump.stdout
    for part in ('id="answer"', 'id="steps-table"', 'id="artifacts-table"', 'id="gates-table"', "<svg"):
        assert part in dom, part
    assert "desktop: ship" in dom
    errors = [
        line
        for line in dump.stderr.splitlines()
        if "Uncaught" in line or ("CONSOLE" in line and ("ERROR" in line or "error" in line))
    ]
    assert not errors, "\n".join(errors)
