"""Loading Keras models from the sources a recipe can name, as tf_keras (Keras 2) models, which TFMOT needs.

- `path/to/file.py:function` or `package.module:function`: a factory called with `model.kwargs` (under a fixed
  seed, so freshly initialised weights are reproducible) that returns a tf_keras model;
- `.h5` (HDF5) and `.keras` files saved by tf_keras, and SavedModel directories saved by tf_keras;
- `.keras` files saved by Keras 3: brought over to tf_keras layer by layer (`keras3_convert.py`).

Python entries run code when imported, and so does a Keras file with `Lambda` layers (Keras deserialises
their Python bytecode): only use sources you trust.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecompress.entries import import_entry, one_line, split_entry
from edgecompress.errors import ModelError, RecipeError
from edgecompress.frameworks import keras_env

if TYPE_CHECKING:
    from edgecompress.recipe import ModelSpec

#: Seed under which a python-entry factory builds its model, so a model trained from scratch starts the same.
FACTORY_SEED = 0


def load_model(spec: ModelSpec, recipe_path: Path) -> Any:
    """Build or load the model as a tf_keras model; apply `spec.checkpoint` (weights: .h5 or
    .weights.h5 via `load_weights`)."""
    from edgecompress.recipe import resolve_path

    entry = split_entry(spec.source)
    if entry is not None:
        model = _from_python_entry(*entry, spec.kwargs, recipe_path)
    else:
        path = resolve_path(spec.source, recipe_path)
        if not path.exists():
            raise RecipeError(f"model.source: file not found: {spec.source}")
        model = load_file(path)
    if spec.checkpoint:
        weights = resolve_path(spec.checkpoint, recipe_path)
        try:
            model.load_weights(str(weights))
        except Exception as exc:
            raise ModelError(f"{weights}: the weights do not fit the model: {one_line(exc)}") from exc
    return model


def load_file(path: Path) -> Any:
    """A tf_keras model from a `.h5`, a `.keras` (tf_keras or Keras 3) file or a SavedModel directory."""
    keras = keras_env.keras()
    suffix = path.suffix.lower()
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise RecipeError(
                f"model.source: {path} is a directory without saved_model.pb (not a SavedModel)"
            )
        what = "SavedModel"
    elif suffix in (".h5", ".hdf5", ".keras"):
        from edgecompress.frameworks.keras3_convert import keras_file_version, load_keras3

        if keras_file_version(path) == 3:  # a Keras 3 .h5 is refused there, naming the fix
            return load_keras3(path)
        what = "tf_keras .keras model" if suffix == ".keras" else "HDF5 Keras model"
    else:
        raise RecipeError(
            f"model.source: {path}: unknown Keras model file type '{suffix}'; use 'file.py:function', a .keras, "
            "a .h5 file or a SavedModel directory"
        )
    try:
        model = keras.models.load_model(str(path), compile=False)
    except Exception as exc:
        raise ModelError(f"{path}: cannot load as a {what}: {one_line(exc)}") from exc
    if not isinstance(model, keras.Model):
        raise ModelError(
            f"{path}: the SavedModel holds no Keras model (a plain tf.Module): save it with tf_keras "
            "(model.save(dir) or model.save('m.keras'))"
        )
    return model


def check_keras_model(model: Any, where: str) -> None:
    """ModelError unless `model` is a tf_keras model (a Keras 3 model says how to bring it over)."""
    keras = keras_env.keras()
    if isinstance(model, keras.Model):
        return
    module = type(model).__module__
    if module.startswith("keras.") or module == "keras":
        raise ModelError(
            f"{where} returned a Keras 3 model; edgecompress's Keras path is tf_keras (Keras 2, which TFMOT needs): "
            "build it with `import tf_keras as keras`, or save it with model.save('m.keras') and give that file "
            "as model.source (Keras 3 files are brought over)"
        )
    raise ModelError(f"{where} returned {type(model).__name__}, not a tf_keras Model")


def _from_python_entry(target: str, function: str, kwargs: dict[str, Any], recipe_path: Path) -> Any:
    tf = keras_env.tf()
    factory, where = import_entry(target, function, recipe_path, key="model.source")
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        tf.keras.utils.set_random_seed(FACTORY_SEED)  # python, numpy and TensorFlow: weights reproducible
        model = factory(**kwargs)
    except Exception as exc:
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise ModelError(f"{where}: {function}({args}) failed: {one_line(exc)}") from exc
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    check_keras_model(model, f"{where}: {function}()")
    return model
