"""Lazy registries: YAML names -> "module:attr" strings, imported only when used.

Built-ins are listed as strings so that `import edgecompress` stays light; plugins add entries through
the entry-point group ``edgecompress.<registry name>`` (e.g. ``edgecompress.stages``).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from edgecompress.errors import BackendUnavailable, RecipeError

T = TypeVar("T")


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def import_object(path: str) -> Any:
    """Import "package.module:attr". Raises BackendUnavailable naming the missing package."""
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if (
            exc.name and exc.name.split(".")[0] == "edgecompress"
        ):  # our own module missing: a bug, not an install issue
            raise
        raise BackendUnavailable(
            f"{path} needs the Python package '{exc.name}', which is not installed "
            f"(pip install 'edgecompress[all]')"
        ) from exc
    return getattr(module, attr) if attr else module


class Registry(Generic[T]):
    """Name -> lazily imported object. Keys are the names used in YAML."""

    def __init__(self, kind: str, builtins: dict[str, str]) -> None:
        self.kind = kind
        self._paths = dict(builtins)
        self._loaded: dict[str, T] = {}
        self._plugins_scanned = False

    def _scan_plugins(self) -> None:
        if self._plugins_scanned:
            return
        self._plugins_scanned = True
        for ep in entry_points(group=f"edgecompress.{self.kind}"):
            self._paths.setdefault(ep.name, ep.value)

    def names(self) -> list[str]:
        self._scan_plugins()
        return sorted(self._paths)

    def __contains__(self, name: object) -> bool:
        self._scan_plugins()
        return name in self._paths

    def get(self, name: str) -> T:
        """The object registered as `name`; RecipeError listing the valid names if unknown."""
        self._scan_plugins()
        if name not in self._paths:
            raise RecipeError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, self._paths)}; "
                f"valid: {', '.join(self.names())}"
            )
        if name not in self._loaded:
            self._loaded[name] = import_object(self._paths[name])
        return self._loaded[name]


def resolve_backend(owner: Any, framework: str) -> Any:
    """Import the framework-specific implementation named in `owner.backends[framework]`.

    Stages and exporters declare ``backends = {"torch": "module:attr", ...}``; this is the only place
    that picks one, so no stage or pipeline code branches on the framework.
    """
    backends: dict[str, str] = getattr(owner, "backends", {})
    if framework not in backends:
        raise BackendUnavailable(
            f"{getattr(owner, 'name', owner)} has no {framework} backend; it supports: {', '.join(sorted(backends))}"
        )
    return import_object(backends[framework])


STAGES: Registry[Any] = Registry(
    "stages",
    {
        "train": "edgecompress.stages.train.stage:TrainStage",
        "prune": "edgecompress.stages.prune.stage:PruneStage",
        "distill": "edgecompress.stages.distill.stage:DistillStage",
        "quantize": "edgecompress.stages.quantize.stage:QuantizeStage",
    },
)
FRAMEWORKS: Registry[Any] = Registry(
    "frameworks",
    {
        "torch": "edgecompress.frameworks.torch:TorchAdapter",
        "keras": "edgecompress.frameworks.keras:KerasAdapter",
    },
)
EXPORTERS: Registry[Any] = Registry(
    "exporters",
    {
        "tflite": "edgecompress.exporters.tflite:TFLiteExporter",
        "openvino": "edgecompress.exporters.openvino:OpenVINOExporter",
    },
)
RUNNERS: Registry[Any] = Registry(
    "runners",
    {
        "local": "edgecompress.runners.local:LocalRunner",
        "ssh": "edgecompress.runners.ssh:SSHRunner",
        "adb": "edgecompress.runners.adb:AdbRunner",
    },
)
