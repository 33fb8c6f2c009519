"""Loading torch models from the sources a recipe can name, and their checkpoints.

- `path/to/file.py:function` or `package.module:function`: a factory called with `model.kwargs`
  (under a fixed torch seed, so freshly initialised weights are reproducible);
- a `torch.export` program (`.pt2`): its functional conv/linear/batch-norm calls are turned back into
  `nn.Conv*`/`nn.Linear`/`nn.BatchNorm*` modules at their original names, so it can be inspected,
  fine-tuned and channel-pruned like a python model;
- a TorchScript file (`.pt`, `.pth`, `.ts`, `.torchscript`): inference and fine-tuning only.

Python entries and TorchScript files run code when loaded: only use sources you trust. Torch is imported
inside the functions, so importing this module stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecompress.entries import import_entry, one_line
from edgecompress.errors import ModelError, RecipeError
from edgecompress.recipe import resolve_path

if TYPE_CHECKING:
    from torch import nn

    from edgecompress.recipe import ModelSpec

TORCHSCRIPT_SUFFIXES = {".pt", ".pth", ".ts", ".torchscript"}
#: torch seed under which a python-entry factory runs, so a model trained from scratch starts the same.
FACTORY_SEED = 0


def load_model(spec: ModelSpec, recipe_path: Path) -> Any:
    """Build or load the model, apply `spec.checkpoint`, return it float32, on CPU, in eval mode."""
    source = spec.source
    file_part, _, function = source.rpartition(":")
    suffix = Path(source).suffix.lower()
    if file_part and function.isidentifier():
        model = _from_python_entry(file_part, function, spec.kwargs, recipe_path)
    else:
        path = resolve_path(source, recipe_path)
        if not path.is_file():
            raise RecipeError(f"model.source: file not found: {source}")
        if suffix == ".pt2":
            model = _from_export(path)
        elif suffix in TORCHSCRIPT_SUFFIXES:
            model = _from_torchscript(path)
        else:
            raise RecipeError(
                f"model.source: {source}: unknown torch model file type '{suffix}'; use 'file.py:function', "
                "a torch.export .pt2 or a TorchScript .pt/.ts file"
            )
    if spec.checkpoint:
        _load_checkpoint(model, spec.checkpoint, recipe_path)
    try:
        model = model.float().to("cpu")
    except Exception as exc:
        raise ModelError(f"{source}: cannot convert the model to float32 on CPU: {exc}") from exc
    return model.eval()


# ------------------------------------------------------------------------------------------ sources


def _from_python_entry(target: str, function: str, kwargs: dict[str, Any], recipe_path: Path) -> Any:
    import torch
    from torch import nn

    factory, where = import_entry(target, function, recipe_path, key="model.source")
    try:
        # Fresh weights are the same on every run (torch seeds its generator differently per process);
        # the forked generator leaves the caller's random state untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(FACTORY_SEED)
            model = factory(**kwargs)
    except Exception as exc:
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise ModelError(f"{where}: {function}({args}) failed: {one_line(exc)}") from exc
    if not isinstance(model, nn.Module):
        keras = type(model).__module__.split(".")[0] in ("keras", "tf_keras", "tensorflow")
        hint = " (a Keras model: set model.framework: keras in the recipe)" if keras else ""
        raise ModelError(
            f"{where}: {function}() returned {type(model).__name__}, not a torch.nn.Module{hint}"
        )
    return model


def _from_export(path: Path) -> Any:
    import torch

    try:
        program = torch.export.load(str(path))
        model = program.module(check_guards=False)
    except Exception as exc:
        raise ModelError(f"{path}: cannot load as a torch.export program: {one_line(exc)}") from exc
    static = _static_input_shape(program)
    if static is not None:  # exported with a fixed batch size: drop the shape check, then see if others work
        for key, hook in list(model._forward_pre_hooks.items()):
            if getattr(hook, "__name__", "") == "_check_input_constraints_pre_hook":
                model._forward_pre_hooks.pop(key)
                model._forward_pre_hooks_with_kwargs.pop(key, None)
        try:
            with torch.no_grad():
                model(torch.zeros([static[0] + 1, *static[1:]]))
        except Exception as exc:
            raise ModelError(
                f"{path}: exported with a fixed batch size of {static[0]} and does not run on other batch sizes "
                f"({one_line(exc)}); export with dynamic_shapes={{'x': {{0: torch.export.Dim('batch')}}}}"
            ) from exc
    try:
        model = lift_functional_layers(model)
    except Exception as exc:
        raise ModelError(f"{path}: cannot rebuild layers from the exported graph: {one_line(exc)}") from exc
    # ExportedProgram.module() forbids train()/eval(); with batch norm lifted into modules they are
    # meaningful again (other ops, e.g. dropout, keep the mode they were exported in).
    for attr in ("train", "eval"):
        model.__dict__.pop(attr, None)
    return model


def _static_input_shape(program: Any) -> list[int] | None:
    """The first user input's shape when every dimension is a plain int (no dynamic batch)."""
    user_inputs = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            shape = getattr(node.meta.get("val"), "shape", None)
            if shape is not None and all(isinstance(d, int) for d in shape) and len(shape) > 0:
                return [int(d) for d in shape]
            return None
    return None


def _from_torchscript(path: Path) -> Any:
    import torch

    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        hint = ""
        if _is_torch_save_file(path):
            hint = (
                " (it looks like a torch.save file: a state_dict or a pickled model; give the model as a python "
                "entry 'file.py:function' and this file as model.checkpoint, or save it with torch.export)"
            )
        raise ModelError(f"{path}: not a TorchScript file{hint}: {one_line(exc)}") from exc


def _is_torch_save_file(path: Path) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("data.pkl") for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _load_checkpoint(model: Any, checkpoint: str, recipe_path: Path) -> None:
    import torch

    path = resolve_path(checkpoint, recipe_path)
    if not path.is_file():
        raise RecipeError(f"model.checkpoint: file not found: {checkpoint}")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{path}: cannot read the checkpoint (weights_only): {one_line(exc)}") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(
            f"{path}: a checkpoint must be a state_dict (a dict of tensors, optionally under 'state_dict' or 'model')"
        )
    expected = set(model.state_dict())
    if state and all(k.startswith("module.") for k in state) and not expected & set(state):
        state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DataParallel
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in expected]
    resized = [
        f"{k} {list(state[k].shape)} vs {list(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or resized:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("size mismatch in", resized)):
            if keys:
                parts.append(
                    f"{label} {len(keys)} keys ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
                )
        raise ModelError(f"{path}: checkpoint does not match the model: {'; '.join(parts)}")
    try:
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        raise ModelError(f"{path}: checkpoint does not match the model: {one_line(exc)}") from exc


# ------------------------------------------------------------------------ torch.export -> nn layers


def _schema_args(node: Any) -> dict[str, Any]:
    """An aten call's arguments by schema name, defaults filled in."""
    values: dict[str, Any] = {}
    for i, arg in enumerate(node.target._schema.arguments):
        if i < len(node.args):
            values[arg.name] = node.args[i]
        elif arg.name in node.kwargs:
            values[arg.name] = node.kwargs[arg.name]
        elif arg.has_default_value():
            values[arg.name] = arg.default_value
    return values


def lift_functional_layers(gm: Any) -> Any:
    """Replace aten conv/linear/batch_norm calls on owned weights with real nn modules, in place.

    `ExportedProgram.module()` keeps parameters in plain containers named like the original modules
    ("layer1.conv1.weight") and calls `aten.conv2d` on them. Forward hooks, `layers()` and Torch-Pruning
    need `nn.Conv2d` & co., so each such call becomes a `call_module` of a new layer holding the same
    parameter objects at the original path. Calls it cannot map one-to-one stay functional.
    """
    import torch
    from torch import nn

    aten = torch.ops.aten
    convs = {aten.conv1d.default: nn.Conv1d, aten.conv2d.default: nn.Conv2d, aten.conv3d.default: nn.Conv3d}
    norms = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}
    graph = gm.graph
    uses: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "get_attr":
            uses[node.target] = uses.get(node.target, 0) + len(node.users)

    def owner(*attrs: Any) -> tuple[str, nn.Module] | None:
        """The plain container that holds exactly these attributes, each used once."""
        if not all(a is None or getattr(a, "op", "") == "get_attr" for a in attrs):
            return None
        targets = [a.target for a in attrs if a is not None]
        paths = {t.rpartition(".")[0] for t in targets}
        if len(paths) != 1 or "" in paths or any(uses.get(t, 0) != 1 for t in targets):
            return None
        path = paths.pop()
        module = gm.get_submodule(path)
        own = set(module._parameters) | set(module._buffers)
        if (
            type(module) is not nn.Module
            or list(module.children())
            or own - {t.rpartition(".")[2] for t in targets} - {"num_batches_tracked"}
        ):
            return None
        return path, module

    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        layer: nn.Module | None = None
        if node.target in convs:
            a = _schema_args(node)
            found = owner(a["weight"], a["bias"])
            if found is None or not isinstance(a["padding"], list | tuple):
                continue
            path, holder = found
            weight = holder.weight
            layer = convs[node.target](
                weight.shape[1] * a["groups"],
                weight.shape[0],
                tuple(weight.shape[2:]),
                stride=a["stride"],
                padding=a["padding"],
                dilation=a["dilation"],
                groups=a["groups"],
                bias=a["bias"] is not None,
            )
        elif node.target == aten.linear.default:
            a = _schema_args(node)
            found = owner(a["weight"], a["bias"])
            if found is None:
                continue
            path, holder = found
            layer = nn.Linear(holder.weight.shape[1], holder.weight.shape[0], bias=a["bias"] is not None)
        elif node.target == aten.batch_norm.default:
            a = _schema_args(node)
            found = owner(a["weight"], a["bias"], a["running_mean"], a["running_var"])
            rank = getattr(a["input"].meta.get("val"), "ndim", None)
            if found is None or rank not in norms or a["weight"] is None or a["running_mean"] is None:
                continue
            path, holder = found
            layer = norms[rank](holder.weight.shape[0], eps=a["eps"], momentum=a["momentum"])
        if layer is None:
            continue
        for key, value in list(holder._parameters.items()) + list(holder._buffers.items()):
            if key in layer._parameters:
                layer._parameters[key] = value
            else:
                layer._buffers[key] = value
        parent_path, _, leaf = path.rpartition(".")
        setattr(gm.get_submodule(parent_path) if parent_path else gm, leaf, layer)
        with graph.inserting_before(node):
            call = graph.call_module(path, (a["input"],))
        call.meta = dict(node.meta)
        node.replace_all_uses_with(call)
        graph.erase_node(node)
    for node in list(graph.nodes):
        if node.op == "get_attr" and not node.users:
            graph.erase_node(node)
    graph.lint()
    gm.recompile()
    return gm
