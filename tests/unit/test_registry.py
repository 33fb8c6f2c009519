"""Registries: lazy loading, did-you-mean, and the contract every registered entry fulfils."""

from __future__ import annotations

import pytest

from edgecompress.errors import BackendUnavailable, RecipeError
from edgecompress.registry import (
    EXPORTERS,
    FRAMEWORKS,
    RUNNERS,
    STAGES,
    Registry,
    did_you_mean,
    resolve_backend,
)
from edgecompress.stages.base import Stage, StageConfig


def test_did_you_mean():
    assert did_you_mean("prnue", ["prune", "train"]) == " (did you mean 'prune'?)"
    assert did_you_mean("zzz", ["prune"]) == ""


def test_unknown_name_lists_valid_and_suggests():
    with pytest.raises(
        RecipeError,
        match=r"unknown stages 'distil' \(did you mean 'distill'\?\); valid: distill, prune, quantize, train",
    ):
        STAGES.get("distil")


def test_missing_package_is_backend_unavailable():
    reg: Registry[object] = Registry("things", {"x": "no_such_package_abc.mod:Thing"})
    with pytest.raises(BackendUnavailable, match="no_such_package_abc"):
        reg.get("x")


@pytest.mark.parametrize("name", STAGES.names())
def test_every_stage_fulfils_the_contract(name):
    stage = STAGES.get(name)
    assert issubclass(stage, Stage) and stage.name == name
    assert issubclass(stage.Config, StageConfig)
    assert stage.Config.model_config.get("extra") == "forbid" and stage.Config.model_config.get("frozen")
    assert "```yaml" in (stage.__doc__ or ""), "every stage docstring shows a YAML example"
    for field_name, field in stage.Config.model_fields.items():
        assert field_name == "type" or field.description, f"{name}.{field_name} has no description"
    for framework in stage.backends:
        assert framework in FRAMEWORKS
        assert callable(resolve_backend(stage, framework))


@pytest.mark.parametrize("name", EXPORTERS.names())
def test_every_exporter_fulfils_the_contract(name):
    exporter = EXPORTERS.get(name)
    assert exporter.name == name and exporter.precisions and exporter.runtime
    for framework in exporter.backends:
        assert callable(resolve_backend(exporter, framework))


def test_runners_and_frameworks_import():
    assert RUNNERS.get("local") is not None
    assert FRAMEWORKS.get("torch").name == "torch"


def test_resolve_backend_unknown_framework():
    with pytest.raises(BackendUnavailable, match="no jax backend"):
        resolve_backend(STAGES.get("prune"), "jax")
