"""Keras adapter: tf_keras (Keras 2) models, the Keras that TFMOT's pruning and QAT work with.

Loading lives in `keras_loading.py` (Keras 3 files in `keras3_convert.py`), training in `keras_fit.py`, graph
facts (MACs, layers, channel groups) in `keras_layers.py`. Every TensorFlow import goes through `keras_env.py`,
inside functions: `import edgecompress` and the PyTorch path never load TensorFlow.

Models take NHWC images (`data.layout: NHWC`, `model.input_shape: [1, H, W, C]`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecompress.entries import one_line
from edgecompress.errors import ModelError
from edgecompress.frameworks import keras_env
from edgecompress.frameworks.base import FitOptions, FrameworkAdapter, LayerInfo, ModelStats

if TYPE_CHECKING:
    from edgecompress.console import UI
    from edgecompress.data import DataBundle
    from edgecompress.recipe import ModelSpec


@dataclass
class KerasQuantized:
    """What the Keras `quantize` stage makes: the int8 `.tflite` (float32 input and output, int8 inside) and
    the Keras model it was converted from.

    mode "qat": `model` is TFMOT's quantization-aware model (fake-quantized), whose outputs are the int8
    graph's reference, as a PyTorch PT2E graph is. mode "ptq": `model` is the float model the TFLite
    converter calibrated; only the .tflite holds the int8 graph, so predictions run it on LiteRT."""

    model: Any
    tflite: bytes
    mode: str
    scheme: str
    float_layers: tuple[str, ...] = ()
    #: A precision plan's forms (LayerOp node -> "float"), applied to `tflite` by `keras_derive.derive`.
    plan: dict[str, str] = field(default_factory=dict)
    _interpreter: Any = None
    _float_tflite: bytes | None = None  # the fp32 conversion of the same weights (the float forms' weights)
    _plan_layers: list[Any] | None = None  # keras_derive's plan LayerOps of this .tflite, computed once

    @property
    def runs_tflite(self) -> bool:
        """Whether only the .tflite computes this model: a PTQ model, or one whose plan made ops float (the
        QAT model still fake-quantizes them)."""
        return self.mode == "ptq" or bool(self.plan)

    def float_tflite(self, input_shape: list[int]) -> bytes:
        """The fp32 .tflite of the same weights (TFMOT's fake quantization removed), converted once."""
        if self._float_tflite is None:
            from edgecompress.frameworks.keras_convert import float_twin, to_tflite

            self._float_tflite = to_tflite(float_twin(self.model), input_shape)
        return self._float_tflite

    def predict_int8(self, x: np.ndarray) -> np.ndarray:
        """The int8 .tflite's outputs on LiteRT, one image at a time (its input has batch 1)."""
        if self._interpreter is None:
            from ai_edge_litert.interpreter import Interpreter

            self._interpreter = Interpreter(model_content=self.tflite, num_threads=2)
            self._interpreter.allocate_tensors()
        it = self._interpreter
        inp, out = it.get_input_details()[0], it.get_output_details()[0]
        rows = []
        for image in np.ascontiguousarray(x, dtype=np.float32):
            it.set_tensor(inp["index"], image[None])
            it.invoke()
            rows.append(it.get_tensor(out["index"])[0].copy())
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, 0), dtype=np.float32)


class KerasAdapter(FrameworkAdapter):
    """The FrameworkAdapter for tf_keras models (functional, Sequential or subclassed)."""

    name = "keras"
    model_suffix = ".keras"

    def __init__(self) -> None:
        self.trained_images = 0

    # ------------------------------------------------------------------------------------------ loading

    def load(self, spec: ModelSpec, recipe_path: Path) -> Any:
        from edgecompress.frameworks.keras_loading import load_model

        return load_model(spec, recipe_path)

    def check(self, model: Any, input_shape: list[int], num_classes: int) -> None:
        """One forward pass on zeros; ModelError if it fails or the output is not (batch, num_classes)."""
        model = _keras_model(model)
        try:
            out = model(np.zeros(input_shape, dtype=np.float32), training=False)
        except Exception as exc:
            raise ModelError(
                f"model forward failed on input shape {list(input_shape)} (Keras models take NHWC: "
                f"[batch, height, width, channels]): {one_line(exc)}"
            ) from exc
        if isinstance(out, (list, tuple, dict)):
            raise ModelError(f"model output must be one tensor of shape [{input_shape[0]}, {num_classes}]")
        if list(out.shape) != [input_shape[0], num_classes]:
            raise ModelError(
                f"model output must be logits (or probabilities) of shape [{input_shape[0]}, {num_classes}] "
                f"(batch, classes); got {list(out.shape)} for input shape {list(input_shape)}"
            )

    # -------------------------------------------------------------------------------------- measuring

    def stats(self, model: Any, input_shape: list[int]) -> ModelStats:
        from edgecompress.frameworks.keras_layers import count_macs, count_params

        model = _keras_model(model)
        return ModelStats(params=count_params(model), macs=count_macs(model, input_shape))

    def layers(self, model: Any, input_shape: list[int]) -> list[LayerInfo]:
        from edgecompress.frameworks.keras_layers import layer_infos

        return layer_infos(_keras_model(model), input_shape)

    def latency_layers(self, model: Any, input_shape: list[int]) -> list[Any]:
        """The model's computing ops as the latency model measures them (`keras_ops.layer_ops`)."""
        from edgecompress.frameworks.keras_ops import layer_ops

        return layer_ops(_keras_model(model), input_shape)

    def weights(self, model: Any) -> dict[str, np.ndarray]:
        """Conv and dense kernels by layer name in the canonical [out, in_per_group, kh, kw] layout."""
        from edgecompress.frameworks.keras_layers import canonical_weights

        return canonical_weights(_keras_model(model))

    # ------------------------------------------------------------------------------ copy, predict, save

    def copy(self, model: Any) -> Any:
        """An independent copy (architecture and weights)."""
        if isinstance(model, KerasQuantized):
            return replace(model, model=self.copy(model.model), _interpreter=None)
        keras = keras_env.keras()
        with _custom_scope():
            clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        return clone

    def predict(self, model: Any, x: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
        from edgecompress.frameworks.keras_fit import predict

        if isinstance(model, KerasQuantized):
            return model.predict_int8(x) if model.runs_tflite else predict(model.model, x)
        return predict(model, x, batch_size=batch_size)

    def fit(self, model: Any, data: DataBundle, options: FitOptions, *, seed: int, ui: UI) -> Any:
        from edgecompress.frameworks.keras_fit import fit

        counter = [0]
        try:
            return fit(model, data, options, seed=seed, ui=ui, counter=counter)
        finally:
            self.trained_images += counter[0]

    def save(self, model: Any, path: Path, input_shape: list[int]) -> Path:
        """The model as a tf_keras file: `.keras`, or for a quantized build its TFMOT QAT model as `.h5` (TFMOT's
        quantizers do not load back from a `.keras`; load the .h5 inside
        `tfmot.quantization.keras.quantize_scope()`); a PTQ build writes its float model (the int8 model is the
        exported .tflite). Returns the file written."""
        keras_model = _keras_model(model)
        path = Path(path).with_suffix(".h5" if _wrapped(keras_model) else ".keras")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*HDF5 file.*legacy")
                keras_model.save(str(path))
        except Exception as exc:
            raise ModelError(f"{path}: cannot save the Keras model: {one_line(exc)}") from exc
        return path

    def checkpoint_save(self, model: Any, path: Path) -> None:
        """A stage checkpoint: the model as a tf_keras `.keras` zip (architecture and weights; a quantized
        model's .tflite beside it). Lambda layers are saved as Python bytecode."""
        import json
        import zipfile

        path = Path(path)
        with zipfile.ZipFile(path, "w") as zf:
            keras_file = self.save(_keras_model(model), path.with_name(path.name + ".keras"), [])
            zf.write(keras_file, f"model{keras_file.suffix}")
            keras_file.unlink()
            if isinstance(model, KerasQuantized):
                zf.writestr("int8.tflite", model.tflite)
                meta = {"mode": model.mode, "scheme": model.scheme, "float_layers": list(model.float_layers)}
                zf.writestr("quantized.json", json.dumps(meta))

    def checkpoint_load(self, path: Path) -> Any:
        """The model `checkpoint_save` wrote (Lambda layers' bytecode runs: only the build's own files)."""
        import json
        import tempfile
        import zipfile

        keras = keras_env.keras()
        with zipfile.ZipFile(path) as zf, tempfile.TemporaryDirectory() as tmp:
            zf.extract("model.keras", tmp)
            with _custom_scope():
                model = keras.models.load_model(
                    str(Path(tmp) / "model.keras"), compile=False, safe_mode=False
                )
            if "quantized.json" not in zf.namelist():
                return model
            meta = json.loads(zf.read("quantized.json"))
            return KerasQuantized(
                model, zf.read("int8.tflite"), meta["mode"], meta["scheme"], tuple(meta["float_layers"])
            )


def _wrapped(model: Any) -> bool:
    """Whether the model has TFMOT's QAT layers."""
    from edgecompress.frameworks.keras_layers import WRAPPERS

    return any(type(layer).__name__ in (*WRAPPERS, "QuantizeLayer") for layer in getattr(model, "layers", []))


def _keras_model(model: Any) -> Any:
    return model.model if isinstance(model, KerasQuantized) else model


def _custom_scope() -> Any:
    """A scope in which TFMOT's QAT layers deserialise."""
    return keras_env.tfmot().quantization.keras.quantize_scope()
