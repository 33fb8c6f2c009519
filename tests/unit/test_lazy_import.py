"""`import edgecompress` and `edgecompress --help` load no framework or runtime."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "tensorflow", "tf_keras", "openvino", "ai_edge_litert", "litert_torch", "jax")


def _loaded_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint('LOADED:', *[m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1].split()[1:]


def test_import_edgecompress_is_light():
    assert _loaded_after("import edgecompress") == []


def test_cli_help_is_light():
    code = (
        "import sys\nfrom edgecompress import cli\nsys.argv = ['edgecompress', '--help']\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass"
    )
    assert _loaded_after(code) == []


def test_validating_a_recipe_is_light():
    code = "from edgecompress.recipe import load_recipe\nload_recipe('recipes/quickstart.yaml')"
    assert _loaded_after(code) == []
