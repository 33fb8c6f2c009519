"""Keras 3 `.keras` files brought over to tf_keras (Keras 2), the Keras TFMOT can prune and quantize.

A Keras 3 `.keras` file is a zip of `metadata.json` (`keras_version` "3.x"), `config.json` (the model in
Keras 3's serialization format) and `model.weights.h5`. They are read with zipfile, json and h5py only
(importing Keras 3 would bind `tf.keras` to Keras 3 in this process); the config is rewritten into what
tf_keras's `from_config` reads, the model built through `keras_env`, the weights copied layer by layer.

What differs between the two formats, and what is done about it:
- objects: `{"module", "class_name", "config", "registered_name"}`. A class outside Keras (a module not under
  `keras`, or a `registered_name` such as "my_pkg>MyBlock") is custom: ModelError naming the layer. Dtype
  policies become their name; initializers, regularizers, constraints `{"class_name", "config"}`.
- options: InputLayer's `batch_shape` is tf_keras's `batch_input_shape`, LeakyReLU's `negative_slope` its
  `alpha`. An option tf_keras's class does not take is dropped at its neutral value only (`optional: false`,
  `quantization_config: null`, ...); set otherwise, it is an error naming the layer and the option.
- graph: a call `{"args": [tensor or [tensors]], "kwargs": {...}}`, its tensors `{"class_name":
  "__keras_tensor__", "config": {"keras_history": [layer, node, tensor]}}`, becomes Keras 2's
  `[[layer, node, tensor, kwargs], ...]`. A call of a nested model moves one node up: tf_keras counts the
  model's construction as its node 0 (`_should_skip_first_node` in tf_keras/src/engine/functional.py).
- operations: arithmetic on tensors is recorded as an operation, not a layer (keras.applications' MobileNetV3
  writes `ReLU(6.0)(x + 3.0) * (1.0 / 6.0)`). A tensor and a number (+, -, *, /) become a Rescaling layer,
  two tensors (+, -, *) an Add/Subtract/Multiply layer, under the operation's name; any other operation is
  an error naming it, as are Lambda layers (Python code).
- activations: Keras 3's `hard_sigmoid` is relu6(x + 3) / 6, tf_keras's clip(0.2 x + 0.5, 0, 1), and
  tf_keras has no `hard_silu`/`hard_swish`: these become layers after the layer that had them,
  `<layer>_hard_sigmoid_scale` Rescaling(1/6, offset 0.5) -> `<layer>_hard_sigmoid` ReLU(max_value=1)
  (-> `<layer>_hard_silu` Multiply with the input). A Sequential model that needs this comes back functional.
- weights: Keras 3 stores a layer's variables as `layers/<snake_case class name>[_<n>]/vars/<i>`, numbered
  per class in the model's layer order (not by layer name), a nested model's under its own `layers/`, in the
  order the layer created them (`_WEIGHT_ORDER`). They are set on tf_keras's weights by name, shapes checked;
  a layer class with weights outside `_WEIGHT_ORDER` is an error rather than a guess.
"""

from __future__ import annotations

import inspect
import io
import json
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgecompress.entries import one_line
from edgecompress.errors import ModelError

_CONFIG = "config.json"
_METADATA = "metadata.json"
_WEIGHTS = "model.weights.h5"
_MODEL_CLASSES = {"Functional", "Model", "Sequential"}

#: Keras 3's variable order of each layer class with weights, in tf_keras's weight names. A variable a
#: layer's options leave out (bias with use_bias=False, gamma with scale=False) is absent in both.
_WEIGHT_ORDER: dict[str, tuple[str, ...]] = {
    **{f"Conv{d}D": ("kernel", "bias") for d in (1, 2, 3)},
    **{f"Conv{d}DTranspose": ("kernel", "bias") for d in (1, 2, 3)},
    **{f"DepthwiseConv{d}D": ("depthwise_kernel", "bias") for d in (1, 2)},
    **{f"SeparableConv{d}D": ("depthwise_kernel", "pointwise_kernel", "bias") for d in (1, 2)},
    "Dense": ("kernel", "bias"),
    "BatchNormalization": ("gamma", "beta", "moving_mean", "moving_variance"),
    "LayerNormalization": ("gamma", "beta"),
    "PReLU": ("alpha",),
    "Embedding": ("embeddings",),
}

#: Keras 3 options tf_keras lacks, with the value at which dropping them changes nothing.
_KERAS3_ONLY_OPTIONS: dict[str, Any] = {
    "optional": False,  # InputLayer
    "quantization_config": None,  # Dense, Embedding, convolutions
    "lora_rank": None,
    "lora_alpha": None,
    "input_axes": None,  # the fan axes of the VarianceScaling initializers
    "output_axes": None,
    "rms_scaling": False,  # LayerNormalization
}

#: Options with another name in tf_keras, per class.
_RENAMED_OPTIONS = {
    "InputLayer": {"batch_shape": "batch_input_shape"},
    "LeakyReLU": {"negative_slope": "alpha"},
}
#: Keyword arguments tf_keras's base Layer takes through **kwargs.
_BASE_LAYER_KWARGS = {"input_dim", "input_shape", "batch_input_shape", "batch_size", "weights", "autocast"}
_BASE_LAYER_KWARGS |= {"activity_regularizer", "implementation"}

#: Keras 3 arithmetic operations (keras.src.ops.numpy) brought over as layers.
_OPERATIONS = {"Add", "Subtract", "Multiply", "TrueDivide", "Divide"}

_ACTIVATION_ALIASES = {"silu": "swish", "hard_swish": "hard_silu"}
#: Activations rebuilt from standard layers; True: multiplied by the layer's output (hard_silu).
_HARD_ACTIVATIONS = {"hard_sigmoid": False, "hard_silu": True}

#: Keras 3 modules of the objects a layer option may hold, and their tf_keras module.
_OBJECT_FAMILIES = {f"keras.{family}": family for family in ("initializers", "regularizers", "constraints")}
#: The way out of every refusal.
_RESAVE = "or save the model with tf_keras (TF_USE_LEGACY_KERAS=1)"


def keras_file_version(path: str | Path) -> int:
    """3 for a file saved by Keras 3, 2 for one saved by tf_keras (Keras 2).

    A `.keras` zip says so in `metadata.json` (tf_keras 2.13+ writes the same zip layout, with
    `keras_version` "2.x"); an HDF5 (`.h5`) model file in its `keras_version` attribute, "2.x" from tf_keras
    and "3.x" when Keras 3 wrote the legacy format (a file without the attribute counts as 2). ModelError for
    a missing file or one that is neither."""
    file = Path(path)
    if not file.is_file():
        raise ModelError(f"`{path}`: no such file")
    if zipfile.is_zipfile(file):
        with zipfile.ZipFile(file) as archive:
            if _METADATA not in archive.namelist():
                raise ModelError(f"`{path}`: a zip without {_METADATA}, so not a Keras model file")
            try:
                version = str(json.loads(archive.read(_METADATA)).get("keras_version", ""))
            except (ValueError, AttributeError) as exc:
                raise ModelError(f"`{path}`: unreadable {_METADATA} ({one_line(exc)})") from exc
    else:
        import h5py

        if not h5py.is_hdf5(file):
            raise ModelError(f"`{path}` is neither a .keras archive nor an HDF5 (.h5) Keras model file")
        with h5py.File(file, "r") as h5:
            version = h5.attrs.get("keras_version", "2")
        version = version.decode() if isinstance(version, bytes) else str(version)
    major = version.split(".", 1)[0]
    if major not in ("2", "3"):
        raise ModelError(
            f"`{path}`: unknown keras_version '{version}' (edgecompress reads Keras 2 and 3 files)"
        )
    return int(major)


def load_keras3(path: str | Path) -> Any:
    """The tf_keras model of a Keras 3 `.keras` file, weights included, not compiled.

    ModelError naming the file and the layer when a layer cannot be brought over (a custom class, a Keras 3
    operation, a layer or option tf_keras lacks) or a stored weight does not fit; also when the file is not a
    Keras 3 `.keras` zip (a tf_keras file loads with tf_keras itself)."""
    import h5py

    from edgecompress.frameworks import keras_env

    where = str(path)
    if keras_file_version(path) != 3:
        raise ModelError(
            f"`{where}` was saved by tf_keras (Keras 2), not Keras 3: load it with tf_keras itself"
        )
    if not zipfile.is_zipfile(path):
        raise ModelError(
            f"`{where}` is a Keras 3 .h5 file, which edgecompress does not read: save the model as .keras"
        )
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        if _CONFIG not in names or _WEIGHTS not in names:
            raise ModelError(
                f"`{where}`: the archive holds {sorted(names)}, not {_CONFIG} and {_WEIGHTS}; "
                "save the model with `model.save(path)` (weights in h5, not sharded)"
            )
        try:
            config = json.loads(archive.read(_CONFIG))
        except ValueError as exc:
            raise ModelError(f"`{where}`: unreadable {_CONFIG} ({one_line(exc)})") from exc
        weights = archive.read(_WEIGHTS)
    keras = keras_env.keras()
    translated = _Translator(where, keras).model(config)
    factory = keras.Sequential if translated["class_name"] == "Sequential" else keras.Model
    try:
        model = factory.from_config(translated["config"])
    except Exception as exc:
        raise ModelError(
            f"`{where}`: tf_keras could not rebuild the model from its translated config ({one_line(exc)}); "
            f"report it, {_RESAVE}"
        ) from exc
    with h5py.File(io.BytesIO(weights), "r") as h5:
        _copy_model_weights(model, config["config"], h5, "", where)
    if config["config"].get("trainable") is False:
        model.trainable = False
    return model


class _Translator:
    """Rewrites one file's Keras 3 config into tf_keras's; `where` names the file in errors."""

    def __init__(self, where: str, keras: Any) -> None:
        self.where = where
        self.keras = keras

    def fail(self, layer: str, text: str) -> ModelError:
        return ModelError(f"`{self.where}`: layer '{layer}' {text}")

    def model(self, obj: dict[str, Any]) -> dict[str, Any]:
        """`{"class_name": "Sequential" | "Functional", "config": ...}` of a Keras 3 model object."""
        cls = obj.get("class_name")
        config = obj.get("config") or {}
        name = obj.get("name") or config.get("name", "?")
        self.check_standard(obj, name)
        if cls not in _MODEL_CLASSES or "layers" not in config:
            raise ModelError(
                f"`{self.where}`: the file holds a Keras 3 `{cls}`, not a Sequential or functional model; "
                "edgecompress brings only those to tf_keras"
            )
        if cls != "Sequential":
            return {"class_name": "Functional", "config": self.functional(config)}
        activations = [str((entry.get("config") or {}).get("activation")) for entry in config["layers"]]
        if any(_ACTIVATION_ALIASES.get(a, a) in _HARD_ACTIVATIONS for a in activations):
            return {"class_name": "Functional", "config": self.functional(self.sequential_graph(config))}
        layers = [self.layer(entry, entry.get("config", {}).get("name", "?")) for entry in config["layers"]]
        return {"class_name": "Sequential", "config": {"name": config.get("name"), "layers": layers}}

    def sequential_graph(self, config: dict[str, Any]) -> dict[str, Any]:
        """A Keras 3 Sequential config written as the Keras 3 functional config of the same chain."""
        entries = config["layers"]
        if not entries or entries[0].get("class_name") != "InputLayer":
            raise ModelError(
                f"`{self.where}`: the Sequential model '{config.get('name')}' has no input shape; "
                "start it with keras.Input(shape) before saving"
            )
        layers: list[dict[str, Any]] = []
        for entry in entries:
            calls = []
            if layers:
                history = {"keras_history": [layers[-1]["name"], 0, 0]}
                calls = [{"args": [{"class_name": "__keras_tensor__", "config": history}], "kwargs": {}}]
            layers.append({**entry, "name": entry["config"]["name"], "inbound_nodes": calls})
        return {
            "name": config.get("name"),
            "layers": layers,
            "input_layers": [[layers[0]["name"], 0, 0]],
            "output_layers": [[layers[-1]["name"], 0, 0]],
        }

    def functional(self, config: dict[str, Any]) -> dict[str, Any]:
        """tf_keras's functional config (name, layers, input_layers, output_layers) of a Keras 3 one."""
        entries = config["layers"]
        shifts = {e.get("name"): 1 for e in entries if e.get("class_name") in _MODEL_CLASSES}
        taken = {e.get("name") for e in entries}
        layers: list[dict[str, Any]] = []
        added: set[str] = set()
        renames: dict[str, str] = {}
        for entry in entries:
            name = entry.get("name") or entry.get("config", {}).get("name", "?")
            if _is_operation(entry):
                layer = self.operation(entry, name, shifts)
            else:
                layer = self.layer(entry, name)
                layer["name"] = name
                nodes = entry.get("inbound_nodes", [])
                layer["inbound_nodes"] = [self.call(node, name, shifts) for node in nodes]
            layers.append(layer)
            chain = self.activation_chain(layer, taken)
            if chain:
                layers.extend(chain)
                added.update(c["name"] for c in chain)
                renames[name] = chain[-1]["name"]

        def rename(ref: list[Any]) -> list[Any]:
            return [renames.get(ref[0], ref[0]), *ref[1:]]

        def shift(ref: list[Any]) -> list[Any]:
            return [ref[0], ref[1] + shifts.get(ref[0], 0), *ref[2:]]

        for layer in layers:
            if layer["name"] not in added:
                layer["inbound_nodes"] = _map_refs(layer["inbound_nodes"], rename)
        ends = [_map_refs(config["input_layers"], shift), _map_refs(config["output_layers"], shift)]
        ends[1] = _map_refs(ends[1], rename)
        # A reference to a call that does not exist would send tf_keras's from_config into an endless loop.
        calls = {
            layer["name"]: len(layer["inbound_nodes"]) + shifts.get(layer["name"], 0) for layer in layers
        }
        calls.update({layer["name"]: 1 for layer in layers if layer["class_name"] == "InputLayer"})

        def check(ref: list[Any]) -> list[Any]:
            if ref[1] >= calls.get(ref[0], 0):
                raise ModelError(
                    f"`{self.where}`: model '{config.get('name')}' uses call {ref[1]} of layer '{ref[0]}', "
                    "which its graph does not have; the file is inconsistent"
                )
            return ref

        _map_refs([*(layer["inbound_nodes"] for layer in layers), ends], check)
        return {
            "name": config.get("name"),
            "layers": layers,
            "input_layers": ends[0],
            "output_layers": ends[1],
        }

    def call(self, node: Any, layer: str, shifts: dict[str, int]) -> Any:
        """Keras 2's node data `[[inbound, node, tensor, kwargs], ...]` of one Keras 3 call."""
        if isinstance(node, list):  # already Keras 2's form (a file from an early Keras 3)
            return node
        args = node.get("args", [])
        if len(args) != 1:
            raise self.fail(
                layer, f"is called with {len(args)} positional arguments; tf_keras layers take one"
            )
        kwargs = {
            key: self.tensors(value, layer, shifts, constants=True)
            for key, value in (node.get("kwargs") or {}).items()
            if not (key == "mask" and value is None)
        }

        def attach(inputs: Any) -> Any:
            if _is_ref(inputs):
                return [*inputs, kwargs]
            if isinstance(inputs, dict):
                return {key: attach(value) for key, value in inputs.items()}
            return [attach(value) for value in inputs]

        inputs = self.tensors(args[0], layer, shifts, constants=False)
        return [attach(inputs)] if _is_ref(inputs) else attach(inputs)

    def operation(self, entry: dict[str, Any], name: str, shifts: dict[str, int]) -> dict[str, Any]:
        """The tf_keras layer of a Keras 3 arithmetic operation in the graph: a Rescaling for a tensor and a
        number (`x + 3.0` is Rescaling(1, 3), `x / 6` is Rescaling(1/6)), Add/Subtract/Multiply for two
        tensors. Any other operation is an error naming it."""
        cls = entry.get("class_name")
        nodes = entry.get("inbound_nodes") or []
        refused = self.fail(
            name,
            f"is the Keras 3 operation `{cls}` (keras.ops or an expression on a tensor), which edgecompress cannot "
            "bring to tf_keras (it brings +, -, * and / by a number, and +, -, * of two tensors); write it with "
            "layers",
        )
        args = nodes[0].get("args", []) if len(nodes) == 1 and isinstance(nodes[0], dict) else []
        if entry.get("module") != "keras.src.ops.numpy" or cls not in _OPERATIONS or len(args) != 2:
            raise refused
        a, b = (self.tensors(arg, name, shifts, constants=True) for arg in args)
        layer = {"class_name": cls, "config": {"name": name}, "name": name}
        if _is_ref(a) and _is_ref(b) and cls in ("Add", "Subtract", "Multiply"):
            return {**layer, "inbound_nodes": [[[*a, {}], [*b, {}]]]}
        tensor, number = (a, b) if _is_ref(a) else (b, a)
        if not _is_ref(tensor) or isinstance(number, bool) or not isinstance(number, (int, float)):
            raise refused
        number = float(number)
        if cls == "Add":
            scale, offset = 1.0, number
        elif cls == "Subtract":
            scale, offset = (1.0, -number) if tensor is a else (-1.0, number)
        elif cls == "Multiply":
            scale, offset = number, 0.0
        elif tensor is a and number != 0:
            scale, offset = 1.0 / number, 0.0
        else:
            raise refused
        config = {"name": name, "scale": scale, "offset": offset}
        return {**layer, "class_name": "Rescaling", "config": config, "inbound_nodes": [[[*tensor, {}]]]}

    def tensors(self, value: Any, layer: str, shifts: dict[str, int], *, constants: bool) -> Any:
        """`value` with each Keras 3 tensor replaced by `[layer, node, tensor]`."""
        if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
            inbound, node, tensor = value["config"]["keras_history"]
            return [inbound, node + shifts.get(inbound, 0), tensor]
        if isinstance(value, (list, tuple)):
            return [self.tensors(item, layer, shifts, constants=constants) for item in value]
        if isinstance(value, dict) and "class_name" not in value:
            return {
                key: self.tensors(item, layer, shifts, constants=constants) for key, item in value.items()
            }
        if not constants:
            raise self.fail(layer, f"is called on a constant ({value!r}), which tf_keras layers do not take")
        return self.value(value, layer, "call argument")

    def layer(self, entry: dict[str, Any], name: str) -> dict[str, Any]:
        """`{"class_name", "config"}` of one Keras 3 layer entry, checked against tf_keras's class."""
        cls = entry.get("class_name", "?")
        self.check_standard(entry, name)
        if cls in _MODEL_CLASSES:
            return self.model(entry)
        layer_class = getattr(self.keras.layers, cls, None)
        if not (isinstance(layer_class, type) and issubclass(layer_class, self.keras.layers.Layer)):
            raise self.fail(
                name,
                f"is a Keras 3 `{cls}`, which tf_keras does not have; rewrite it with standard layers, {_RESAVE}",
            )
        config = self.options(cls, layer_class, entry.get("config") or {}, name, layer_kwargs=True)
        for key in ("activation", "recurrent_activation"):
            if key in config:
                config[key] = self.activation(config[key], name)
        return {"class_name": cls, "config": config}

    def options(
        self, cls: str, target: type, config: dict[str, Any], layer: str, *, layer_kwargs: bool
    ) -> dict[str, Any]:
        """`config` with Keras 3's option names and values turned into what tf_keras's `target` takes."""
        accepted = _init_parameters(target, layer_kwargs=layer_kwargs)
        renamed = _RENAMED_OPTIONS.get(cls, {})
        options: dict[str, Any] = {}
        for key, value in config.items():
            new_key = renamed.get(key, key)
            if accepted is not None and new_key not in accepted:
                if key in _KERAS3_ONLY_OPTIONS and value == _KERAS3_ONLY_OPTIONS[key]:
                    continue
                raise self.fail(
                    layer,
                    f"sets `{key}={value!r}` on its {cls}, an option tf_keras's {cls} does not have; remove it, "
                    + _RESAVE,
                )
            options[new_key] = self.value(value, layer, key)
        return options

    def value(self, value: Any, layer: str, key: str) -> Any:
        """One option value: Keras 3's serialized objects become tf_keras's."""
        if isinstance(value, (list, tuple)):
            return [self.value(item, layer, key) for item in value]
        if not isinstance(value, dict):
            return value
        if "class_name" not in value:
            return {name: self.value(item, layer, key) for name, item in value.items()}
        cls, config = value["class_name"], value.get("config")
        module = value.get("module") or ""
        if cls in ("DTypePolicy", "FloatDTypePolicy"):
            return config["name"]
        if cls.endswith("DTypePolicy"):
            raise self.fail(
                layer, f"has the dtype policy `{cls}` (a quantized Keras 3 layer); save the float model"
            )
        if cls in ("__numpy__", "__tensor__", "__bytes__"):
            return config["value"]
        if cls == "__lambda__":
            raise self.fail(
                layer,
                f"holds Python code in `{key}` (a lambda), which edgecompress cannot bring to tf_keras; rewrite it "
                f"with standard layers, {_RESAVE}",
            )
        if cls == "function" and module == "keras.activations" and isinstance(config, str):
            return config
        family = _OBJECT_FAMILIES.get(module)
        target = getattr(getattr(self.keras, family), cls, None) if family else None
        if isinstance(target, type) and value.get("registered_name") in (None, cls):
            options = self.options(cls, target, config or {}, layer, layer_kwargs=False)
            return {"class_name": cls, "config": options}
        raise self.fail(
            layer,
            f"has `{key}` = {_class_label(value)}, which edgecompress cannot bring from Keras 3 to tf_keras; "
            f"use a built-in one, {_RESAVE}",
        )

    def activation(self, name: Any, layer: str) -> Any:
        """A Keras 3 activation name as tf_keras names it; one tf_keras lacks is an error."""
        if not isinstance(name, str):
            raise self.fail(
                layer, f"has the activation {name!r}, which edgecompress cannot bring to tf_keras"
            )
        name = _ACTIVATION_ALIASES.get(name, name)
        if name in _HARD_ACTIVATIONS:
            return name
        try:
            self.keras.activations.get(name)
        except (ValueError, TypeError) as exc:
            raise self.fail(
                layer,
                f"uses the activation '{name}', which tf_keras does not have; use another activation, "
                + _RESAVE,
            ) from exc
        return name

    def activation_chain(self, layer: dict[str, Any], taken: set[str]) -> list[dict[str, Any]]:
        """The standard layers that compute Keras 3's hard_sigmoid/hard_silu after `layer` (which then
        becomes linear); empty for every other activation."""
        activation = layer["config"].get("activation")
        if activation not in _HARD_ACTIVATIONS:
            return []
        layer["config"]["activation"] = "linear"
        name, calls = layer["name"], range(len(layer["inbound_nodes"]))
        dtype = layer["config"].get("dtype", "float32")

        def new(cls: str, suffix: str, options: dict[str, Any], sources: list[str]) -> dict[str, Any]:
            new_name = f"{name}_{suffix}"
            while new_name in taken:
                new_name += "_"
            taken.add(new_name)
            nodes = [[[source, k, 0, {}] for source in sources] for k in calls]
            config = {"name": new_name, "trainable": layer["config"].get("trainable", True), "dtype": dtype}
            return {
                "class_name": cls,
                "config": {**config, **options},
                "name": new_name,
                "inbound_nodes": nodes,
            }

        scale = new("Rescaling", "hard_sigmoid_scale", {"scale": 1.0 / 6.0, "offset": 0.5}, [name])
        clip = new("ReLU", "hard_sigmoid", {"max_value": 1.0}, [scale["name"]])
        if not _HARD_ACTIVATIONS[activation]:
            return [scale, clip]
        return [scale, clip, new("Multiply", "hard_silu", {}, [name, clip["name"]])]

    def check_standard(self, entry: dict[str, Any], name: str) -> None:
        """ModelError unless `entry` is a class of Keras itself (not a user's or another package's)."""
        module = entry.get("module", "keras")
        registered = entry.get("registered_name")
        standard = isinstance(module, str) and (module == "keras" or module.startswith("keras."))
        if standard and registered in (None, entry.get("class_name")):
            return
        raise self.fail(
            name,
            f"is a custom class {_class_label(entry)} that edgecompress cannot bring from Keras 3 to tf_keras; "
            f"rewrite it with standard layers, {_RESAVE}",
        )


def _is_operation(entry: dict[str, Any]) -> bool:
    """A Keras 3 operation recorded in a functional graph (not a layer: no weights, no place in `layers`)."""
    return (entry.get("module") or "").startswith("keras.src.ops")


def _class_label(obj: dict[str, Any]) -> str:
    registered = obj.get("registered_name")
    if isinstance(registered, str) and ">" in registered:
        return f"`{registered}`"
    return f"`{obj.get('module') or '__main__'}.{obj.get('class_name')}`"


def _init_parameters(target: type, *, layer_kwargs: bool) -> set[str] | None:
    """The keyword arguments `target(...)` takes, following **kwargs up its bases (a layer's end at
    tf_keras's base Layer, which takes `_BASE_LAYER_KWARGS` through its own **kwargs); None: any."""
    accepted = set(_BASE_LAYER_KWARGS) if layer_kwargs else set()
    for base in target.__mro__:
        init = base.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        accepted.update(p.name for p in parameters if p.kind is not p.VAR_KEYWORD and p.name != "self")
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            return accepted
    return None


def _is_ref(v: Any) -> bool:
    """`[layer, node, tensor]` or `[layer, node, tensor, kwargs]`: a reference to a layer's output."""
    return isinstance(v, list) and len(v) in (3, 4) and isinstance(v[0], str) and isinstance(v[1], int)


def _map_refs(data: Any, change: Callable[[list[Any]], list[Any]]) -> Any:
    """Node data or model ends with `change` applied to each `[layer, node, tensor(, kwargs)]` in them."""
    if _is_ref(data):
        return change([*data[:3], *(_map_refs(kwargs, change) for kwargs in data[3:])])
    if isinstance(data, dict):
        return {key: _map_refs(value, change) for key, value in data.items()}
    if isinstance(data, list):
        return [_map_refs(value, change) for value in data]
    return data


def _snake_case(name: str) -> str:
    """Keras 3's `naming.to_snake_case`, which names a layer's group in the weights file."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _copy_model_weights(model: Any, config: dict[str, Any], h5: Any, prefix: str, where: str) -> None:
    """Copies the weights of every layer of the Keras 3 model `config` from `h5` into the tf_keras `model`,
    walking Keras 3's layout (`<prefix>layers/<snake_case class>[_<n>]/vars`) and into nested models."""
    used: dict[str, int] = {}
    for entry in config["layers"]:
        cls = entry["class_name"]
        if _is_operation(entry):
            continue
        group = _snake_case(cls)
        used[group] = used.get(group, -1) + 1
        path = f"{prefix}layers/{group}" + (f"_{used[group]}" if used[group] else "")
        if cls == "InputLayer":
            continue
        layer = model.get_layer(entry.get("name") or entry["config"]["name"])
        if cls in _MODEL_CLASSES:
            _copy_model_weights(layer, entry["config"], h5, f"{path}/", where)
            if entry["config"].get("trainable") is False:
                layer.trainable = False
        else:
            _copy_layer_weights(layer, cls, h5.get(f"{path}/vars"), where)


def _copy_layer_weights(layer: Any, cls: str, group: Any, where: str) -> None:
    """Sets the tf_keras `layer`'s weights from its Keras 3 `vars` group (None: nothing stored)."""
    import numpy as np

    stored = [] if group is None else [group[str(i)] for i in range(len(group))]
    saved_name = None if group is None else group.attrs.get("name")
    if saved_name is not None and saved_name != layer.name:
        raise ModelError(
            f"`{where}`: the weights of layer '{layer.name}' were expected where the file holds '{saved_name}'; "
            "its weights file is laid out in a way edgecompress does not read"
        )
    if not stored and not layer.weights:
        return
    order = _WEIGHT_ORDER.get(cls)
    if order is None:
        raise ModelError(
            f"`{where}`: layer '{layer.name}' is a {cls} with weights, whose Keras 3 layout edgecompress does not "
            f"know (it knows {', '.join(sorted(_WEIGHT_ORDER))}); {_RESAVE}"
        )
    names = [weight.name.rsplit("/", 1)[-1].split(":", 1)[0] for weight in layer.weights]
    expected = [name for name in order if name in names]
    if sorted(expected) != sorted(names) or len(stored) != len(expected):
        raise ModelError(
            f"`{where}`: layer '{layer.name}' ({cls}) has {len(stored)} stored weights where tf_keras expects "
            f"{names}; the file does not match the layer's config"
        )
    by_name = {name: np.asarray(array) for name, array in zip(expected, stored, strict=True)}
    values = []
    for weight, name in zip(layer.weights, names, strict=True):
        value = by_name[name]
        if tuple(value.shape) != tuple(weight.shape):
            raise ModelError(
                f"`{where}`: layer '{layer.name}' weight '{name}' has shape {tuple(value.shape)} in the file but "
                f"{tuple(weight.shape)} in the model its config describes; the file is inconsistent"
            )
        values.append(value)
    layer.set_weights(values)
