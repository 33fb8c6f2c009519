"""Structural checks of artifact files before a runtime loads them (runtimes/sessions.check_artifact), and the
local runner's mapping of them to ArtifactError (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecompress.errors import ArtifactError
from edgecompress.exporters.base import Artifact
from edgecompress.runners.base import check_artifacts, last_json
from edgecompress.runtimes.measure import ARTIFACT_EXIT
from edgecompress.runtimes.sessions import ArtifactUnreadable, check_artifact

IR = """<?xml version="1.0"?>
<net name="m" version="11"><layers>
<layer id="0" name="w" type="Const" version="opset1"><data element_type="f32" shape="4" offset="0" size="16"/></layer>
<layer id="1" name="b" type="Const" version="opset1"><data element_type="f32" shape="2" offset="16" size="8"/></layer>
</layers></net>
"""


def _error(runtime: str, path: Path) -> str:
    with pytest.raises(ArtifactUnreadable) as info:
        check_artifact(runtime, path)
    return str(info.value)


def test_tflite_header_checks(tmp_path):
    f = tmp_path / "m.tflite"
    f.write_bytes(b"")
    assert _error("litert", f) == f"{f}: not a TFLite model: 0 bytes (empty or truncated)"
    f.write_bytes(b"PK\x03\x04" + b"\0" * 60)  # a zip, say
    assert _error("litert", f) == f"{f}: not a TFLite model (no TFL3 file identifier at byte 4; 64 bytes)"
    f.write_bytes((4096).to_bytes(4, "little") + b"TFL3" + b"\0" * 100)
    assert _error("litert", f) == f"{f}: truncated TFLite model: its root table is at byte 4,096 of 108"
    f.write_bytes((16).to_bytes(4, "little") + b"TFL3" + b"\0" * 100)
    check_artifact("litert", f)  # the header is sound; the runtime's loader judges the rest
    assert _error("litert", tmp_path / "none.tflite") == f"{tmp_path / 'none.tflite'}: no such file"


def test_openvino_ir_checks(tmp_path):
    xml, bin_ = tmp_path / "m.xml", tmp_path / "m.bin"
    xml.write_text(IR)
    assert _error("openvino", xml) == f"{xml}: its weights file m.bin is missing"
    bin_.write_bytes(b"\0" * 20)
    assert _error("openvino", xml) == f"{bin_}: truncated: 20 bytes, the model reads up to byte 24"
    bin_.write_bytes(b"\0" * 24)
    check_artifact("openvino", xml)
    xml.write_text(IR[:120])
    assert _error("openvino", xml).startswith(f"{xml}: not an OpenVINO IR: the XML does not parse (")
    xml.write_text("<model/>")
    assert _error("openvino", xml) == f"{xml}: not an OpenVINO IR: its root element is <model>, not <net>"


def _artifact(path: Path) -> Artifact:
    return Artifact(
        name="m",
        format="tflite",
        runtime="litert",
        precision="fp32",
        path=path,
        files=[path],
        size_bytes=path.stat().st_size,
        input_shape=[1, 1, 8, 8],
        layout="NCHW",
    )


def test_runner_maps_to_artifact_error_exit_2(tmp_path):
    f = tmp_path / "m.tflite"
    f.write_bytes(b"\0" * 64)
    with pytest.raises(ArtifactError) as info:
        check_artifacts([_artifact(f)])
    assert info.value.exit_code == 2 and str(info.value).startswith(f"{f}: not a TFLite model")
    # measure.py's exit 3 carries its one line on stdout, after any other output
    stdout = 'noise\n{"artifact_error": "m.tflite: LiteRT cannot load it: bad"}\n'
    assert ARTIFACT_EXIT == 3
    assert last_json(stdout, "artifact_error") == {"artifact_error": "m.tflite: LiteRT cannot load it: bad"}
    assert last_json('{"latency": {}}', "artifact_error") is None
