"""Python entries of a recipe (`path/file.py:function`, `package.module:function`): importing them (which runs
their code: only use sources you trust), and checking by parsing, without running anything, that the function
exists (`edgecompress validate`).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgecompress.errors import ModelError, RecipeError

#: The prefix of the module names given to the python files a recipe names: a model checkpoint pickles their
#: classes by file path and finds them again under this prefix (`torch_checkpoint.py`).
FILE_MODULE_PREFIX = "_edgecompress_model_"


def split_entry(source: str) -> tuple[str, str] | None:
    """(target, function) of 'target:function', or None when `source` is not a python entry."""
    target, _, function = source.rpartition(":")
    return (target, function) if target and function.isidentifier() else None


def one_line(exc: BaseException) -> str:
    """'ErrorType: first line of the message', for one-line error reports."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def import_entry(
    target: str, function: str, recipe_path: Path, *, key: str
) -> tuple[Callable[..., Any], str]:
    """The callable `function` of a python file or module (imported: its code runs) and where it was found.

    RecipeError (naming the recipe `key`) when the file, module or function does not exist; ModelError when
    importing it fails."""
    from edgecompress.recipe import resolve_path

    if target.endswith(".py"):
        path = resolve_path(target, recipe_path)
        if not path.is_file():
            raise RecipeError(f"{key}: file not found: {target}")
        where = str(path)
        name = f"{FILE_MODULE_PREFIX}{path.stem}_{abs(hash(str(path.resolve()))):x}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[name] = module  # classes defined in the file stay importable (export, copy, inspect)
        sys.path.insert(0, str(path.parent))  # so the file can import its neighbours
        try:
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        except (Exception, SystemExit) as exc:  # a file that calls sys.exit() on import too
            sys.modules.pop(name, None)
            raise ModelError(f"{where}: importing the file failed: {one_line(exc)}") from exc
        finally:
            sys.path.remove(str(path.parent))
    else:
        where = target
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            if exc.name and target.startswith(exc.name):
                raise RecipeError(f"{key}: module not found: {target}") from None
            raise ModelError(f"{target}: importing the module failed: {one_line(exc)}") from exc
        except Exception as exc:
            raise ModelError(f"{target}: importing the module failed: {one_line(exc)}") from exc
    factory = getattr(module, function, None)
    if not callable(factory):
        raise RecipeError(f"{key}: {where} has no function '{function}'")
    return factory, where


def missing_function(source: str, recipe_path: Path) -> str | None:
    """Why the python entry `source` cannot work, found by parsing its file without running it: 'file not
    found: X' or 'X has no function F' (None when it looks fine, when `source` is not a python entry, or
    when the module's file cannot be found without importing it, e.g. a compiled module)."""
    from edgecompress.recipe import resolve_path

    parts = split_entry(source)
    if parts is None:
        return None
    target, function = parts
    if target.endswith(".py"):
        path = resolve_path(target, recipe_path)
        if not path.is_file():
            return f"file not found: {target}"
    else:
        found = _module_file(target)
        if not isinstance(found, Path):
            return found
        path = found
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, OSError) as exc:
        return f"{path}: cannot be parsed ({one_line(exc)})"
    names = _top_level_names(tree)
    if function in names or "*" in names:  # a star import may bring it: only running the file would tell
        return None
    defined = sorted(
        n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")
    )
    return f"{path} has no function '{function}' (its functions: {', '.join(defined[:12]) or 'none'})"


def _module_file(module: str) -> Path | str | None:
    """The source file of a dotted module, found without importing anything (the top-level package is looked
    up by the import system's finders, which run no package code); 'module not found: X' when the top-level
    package does not exist; None when the file cannot be told without importing (e.g. a compiled module)."""
    top, *rest = module.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return f"module not found: {module}"
    if not rest:
        return Path(spec.origin) if spec.origin and spec.origin.endswith(".py") else None
    for location in spec.submodule_search_locations or []:
        base = Path(location).joinpath(*rest)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def _top_level_names(tree: ast.Module) -> set[str]:
    """Names a module binds at its top level (functions, classes, assignments, imports; '*' for a star
    import), including inside top-level if/try blocks."""
    names: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    names.add(alias.asname or alias.name.split(".")[0])
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
                visit(getattr(node, "finalbody", []))

    visit(tree.body)
    return names
