"""The project's error hierarchy. Every failure a user can cause or meet is one of these.

Exit codes (see cli.py): RecipeError -> 2 (the input is wrong), every other EdgeCompressError -> 1
(the run failed), GateFailed -> 3 (the build worked but a gate in the recipe did not pass). Stopped by
SIGINT -> 130, by SIGTERM -> 143 (Terminated).
"""

from __future__ import annotations


class EdgeCompressError(Exception):
    """Base of every error edgecompress raises on purpose."""

    exit_code: int = 1


class RecipeError(EdgeCompressError):
    """The recipe, a file it names, or the data it points at is wrong. Found before any training."""

    exit_code = 2


class BackendUnavailable(EdgeCompressError):
    """A framework, converter or runtime the recipe needs is not installed or has no backend."""

    exit_code = 2


class ArtifactError(EdgeCompressError):
    """An artifact file (.tflite, OpenVINO .xml/.bin) is corrupt, truncated or cannot be loaded by its runtime,
    here or on a device. The message is one line naming the file and what is wrong."""

    exit_code = 2


class ModelError(EdgeCompressError):
    """The model could not be loaded, run, or transformed."""


class ExportError(EdgeCompressError):
    """Conversion to a deployment format failed, or the artifact disagrees with the source model."""


class DeviceError(EdgeCompressError):
    """A device could not be reached or an artifact could not be profiled on it."""


class GateFailed(EdgeCompressError):
    """One or more gates in the recipe failed. The report is written before this is raised."""

    exit_code = 3


class Terminated(BaseException):
    """SIGTERM, raised in the main thread by the command's handler so that it unwinds like Ctrl-C: every
    `finally` and `except BaseException` runs (temporary directories removed, child processes killed by
    `subprocess.run`, the previous output kept). Not an Exception: nothing on the way may swallow it."""

    exit_code = 143
