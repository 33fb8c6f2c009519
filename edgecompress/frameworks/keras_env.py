"""The one door to TensorFlow, tf_keras (Keras 2) and TFMOT: every Keras module of edgecompress imports them
through these functions, never directly.

TFMOT works with Keras 2 only, so `tf.keras` must be tf_keras: TensorFlow reads `TF_USE_LEGACY_KERAS` once,
when it is first imported, and this sets it first. TensorFlow and litert-torch share a process safely here
(tensorflow 2.21, litert-torch 0.10, torch 2.13: imported in either order, both convert and run), so Keras
work runs in the build's process. TensorFlow's C++ start-up logging (oneDNN notices, cuda probing on a
machine without a GPU, which it logs as an error) is silenced unless the user set `TF_CPP_MIN_LOG_LEVEL` themselves.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from edgecompress.errors import BackendUnavailable


@contextmanager
def _native_logs_dropped() -> Iterator[None]:
    """File descriptor 2 sent to /dev/null while TensorFlow's C++ start-up logs its notices (oneDNN, cuda
    probing, CPU features) before any logging setting applies; Python exceptions still propagate. TensorFlow
    still sees a GPU where there is one: only the log lines are dropped."""
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (a detached process)
        yield
        return
    sys.stderr.flush()
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


@functools.cache
def tf() -> Any:
    """tensorflow, imported with `tf.keras` bound to tf_keras. BackendUnavailable when it is not installed,
    or when something bound `tf.keras` to Keras 3 before (TensorFlow reads the switch when `tf.keras` is first
    used)."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with _native_logs_dropped():
            import tensorflow

            tensorflow.keras.__name__  # noqa: B018 - binds tf.keras (loads tf_keras) while quiet
            tensorflow.config.list_physical_devices()  # the cuda probe (an error line without a GPU) too
    except ModuleNotFoundError as exc:
        raise BackendUnavailable(
            f"Keras models need TensorFlow, tf-keras and tensorflow-model-optimization ({exc.name} is missing): "
            "pip install 'edgecompress[keras]'"
        ) from exc
    if not tensorflow.keras.__name__.startswith("tf_keras"):
        raise BackendUnavailable(
            "TensorFlow's tf.keras was bound to Keras 3 before edgecompress's Keras adapter ran (TFMOT needs "
            "Keras 2): set TF_USE_LEGACY_KERAS=1 before TensorFlow is first used"
        )
    tensorflow.get_logger().setLevel("ERROR")
    return tensorflow


@functools.cache
def keras() -> Any:
    """tf_keras (Keras 2), the Keras every edgecompress Keras model is."""
    tf()
    try:
        import tf_keras
    except ModuleNotFoundError as exc:
        raise BackendUnavailable("Keras models need tf-keras: pip install 'edgecompress[keras]'") from exc
    return tf_keras


@functools.cache
def tfmot() -> Any:
    """tensorflow_model_optimization (pruning, QAT, collaborative optimization)."""
    keras()
    try:
        import tensorflow_model_optimization
    except ModuleNotFoundError as exc:
        raise BackendUnavailable(
            "Keras pruning and QAT need tensorflow-model-optimization: pip install 'edgecompress[keras]'"
        ) from exc
    return tensorflow_model_optimization
