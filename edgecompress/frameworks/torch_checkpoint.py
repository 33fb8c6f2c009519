"""Stage checkpoints of torch models (`build --resume`): the whole module, pickled by `torch.save`.

A pruned model is no longer the architecture its factory builds, so a state_dict cannot restore it; the
module object is pickled instead. Loading a pickle executes code: these files are the build's own, written
beside the user's output directory and read back only by `build --resume`.

Classes defined in a recipe's model file live in a module whose name changes from process to process
(`entries.import_entry`), so they are pickled by file path and looked up, when loaded, in the
module the build imported from that file (a resumed build loads the recipe's model first).
"""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path
from typing import Any

from edgecompress.entries import FILE_MODULE_PREFIX
from edgecompress.errors import ModelError


def save_module(model: Any, path: Path) -> None:
    """Pickle `model` to `path`; ModelError for graphs whose pickle would not restore them."""
    import torch

    for name, module in model.named_modules():
        where = f" ({name})" if name else ""
        if isinstance(module, torch.jit.ScriptModule):
            raise ModelError(f"a TorchScript model{where} is not checkpointed")
        if isinstance(module, torch.fx.GraphModule):
            raise ModelError(
                f"a torch.fx graph{where} (a .pt2 source or a quantized model) is not checkpointed: a pickle "
                "drops the node metadata later steps read"
            )
    torch.save(model, path, pickle_module=types.SimpleNamespace(__name__="pickle", Pickler=_Pickler))


def load_module(path: Path) -> Any:
    """The module `save_module` wrote (unpickled: runs code; only for the build's own checkpoints)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


class _Pickler(pickle.Pickler):
    """Pickles the classes and functions of a recipe's model file by the file's path."""

    def reducer_override(self, obj: Any) -> Any:
        module = getattr(obj, "__module__", None)
        if isinstance(obj, (type, types.FunctionType)) and str(module).startswith(FILE_MODULE_PREFIX):
            return _from_file, (str(Path(sys.modules[module].__file__).resolve()), obj.__qualname__)
        return NotImplemented


def _from_file(path: str, qualname: str) -> Any:
    """The object `qualname` of the model file at `path`, as the running build imported it."""
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if name.startswith(FILE_MODULE_PREFIX) and file and str(Path(file).resolve()) == path:
            obj: Any = module
            for part in qualname.split("."):
                obj = getattr(obj, part)
            return obj
    raise ModelError(f"the checkpoint needs {qualname} from {path}, which this build did not import")
