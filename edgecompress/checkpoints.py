"""Stage checkpoints: a build's state after each finished stage, so `build --resume` skips the stages an
earlier build (failed, interrupted or not) already ran for the same recipe.

They live in `<output parent>/.edgecompress-stages/<output name>/`: not in the temporary build directory (a
failed build deletes it) nor in the output (only a successful build replaces it). They are kept after a
successful build too, so that changing only the exports, devices, profiling, gates or a later stage and
building again with `--resume` runs only what changed. One directory per stage, `<index>-<type>/`:
`checkpoint.json` (the key, the time it was saved, the stage's Step with its notes, the context's
`budget_references`, a sha256 per model file) and the models the framework adapter wrote: `model.ckpt`, plus
`teacher.ckpt` / `budget_unpruned.ckpt` in the checkpoint of the stage that set them. Writing checkpoint i
removes those from i on: the directory always holds one chain of stages run one after the other.

No stage that leaves quantization state in the context (`quantize`) is checkpointed, nor any after it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgecompress.console import UI
from edgecompress.context import CHECKPOINTED_MODELS, RunContext
from edgecompress.environment import package_versions
from edgecompress.recipe import Recipe, resolve_path
from edgecompress.report import Step

#: Raised when the layout or meaning of a checkpoint changes; part of every key.
FORMAT = 1
META = "checkpoint.json"


def checkpoint_dir(out_dir: Path) -> Path:
    """Where the stage checkpoints of the build that writes `out_dir` live."""
    return out_dir.parent / ".edgecompress-stages" / out_dir.name


def reads_targets(config: Any) -> bool:
    """Whether a stage measures the recipe's export targets (prune latency budgets, round_to auto): its result
    then depends on the export, devices and profile sections as well."""
    return bool(getattr(config, "latency", None)) or getattr(config, "round_to", None) == "auto"


def stage_keys(recipe: Recipe, recipe_path: Path) -> list[str]:
    """Per stage, the sha256 of everything its checkpoint depends on: the edgecompress and framework versions,
    the model section and the bytes of the files it names, the data section, the seed, the stage configs up to
    it, and the export, devices and profile sections once a stage up to it measures the export targets."""
    dump = recipe.model_dump(mode="json")
    base = {
        "format": FORMAT,
        "versions": package_versions("edgecompress", recipe.model.resolved_framework),
        "model": dump["model"],
        "model_files": _model_files(recipe, recipe_path),
        "data": dump["data"],
        "seed": dump["seed"],
    }
    keys, targets = [], False
    for i, config in enumerate(recipe.stages):
        targets = targets or reads_targets(config)
        content = {**base, "stages": dump["stages"][: i + 1]}
        if targets:
            content.update({k: dump[k] for k in ("export", "devices", "profile")})
        keys.append(hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest())
    return keys


@dataclass(frozen=True)
class Resumed:
    """What `StageCheckpoints.resume` restored."""

    steps: list[Step]  # of the resumed stages, in order, marked resumed
    model: Any  # the model after the last of them
    reference: str | None  # the reference step's name when the teacher was restored with them


class StageCheckpoints:
    """The checkpoints of one build's stages (see the module docstring)."""

    def __init__(self, directory: Path, recipe: Recipe, recipe_path: Path, ui: UI) -> None:
        self.directory = directory
        self.recipe = recipe
        self.ui = ui
        self.keys = stage_keys(recipe, recipe_path)
        #: The stage whose checkpoint continues the chain from stage 0 (-1: a stage before has none).
        self._next = 0
        #: Context model -> the object already in the chain (saved or restored): each is saved once.
        self._saved: dict[str, Any] = {}

    def resume(self, ctx: RunContext) -> Resumed | None:
        """Restore into `ctx` the longest run of intact checkpoints from stage 0 whose keys match the recipe,
        saying which stages are skipped and why the next one is not; None when no stage can be skipped."""
        if not self.recipe.stages:
            return None
        metas: list[dict[str, Any]] = []
        while len(metas) < len(self.recipe.stages) and (meta := self._read(len(metas))) is not None:
            metas.append(meta)
        if not metas:
            self.ui.info(f"--resume: no usable stage checkpoint in {self.directory}; running every stage")
            return None
        models: dict[str, Any] = {}
        while metas and not models:
            try:
                models = self._load(metas, ctx.adapter)
            except Exception as exc:  # unpickling fails in many ways (e.g. a class renamed since)
                self.ui.warn(
                    f"{self._stage(len(metas) - 1)} — checkpoint ignored: it does not load ({_line(exc)})"
                )
                metas.pop()
        if not metas:
            return None
        reference = None
        for attr in CHECKPOINTED_MODELS:
            carrier = max((i for i, m in enumerate(metas) if attr in m["files"]), default=None)
            if carrier is not None:
                setattr(ctx, attr, models[attr])
                self._saved[attr] = models[attr]
                if attr == "teacher":  # set as its carrier started: the reference is the step before that
                    reference = metas[carrier - 1]["step"].name if carrier else "baseline"
        if any(reads_targets(c) for c in self.recipe.stages[: len(metas)]):
            ctx.budget_references.update({k: tuple(v) for k, v in metas[-1]["budget_references"].items()})
        for i, meta in enumerate(metas):
            ctx.notes[i] = meta["step"].notes
            self.ui.info(
                f"{self._stage(i)} — resumed from checkpoint (saved {meta['saved']}): test acc "
                f"{meta['step'].test_accuracy:.4f}"
            )
        self._next = len(metas)
        steps = [m["step"].model_copy(update={"resumed": True}) for m in metas]
        return Resumed(steps=steps, model=models["model"], reference=reference)

    def save(self, index: int, ctx: RunContext, model: Any, step: Step) -> None:
        """Checkpoint stage `index`, which just ran (the checkpoints after it, from another run of it, go first).
        One that cannot be written is said on the console; the build goes on without it."""
        self._remove_from(index)
        if index != self._next:
            return  # an earlier stage has no checkpoint: this one could never be resumed
        self._next = -1
        if ctx.quantization is not None:
            self.ui.info(f"  {self._stage(index)} is not checkpointed: its quantization state is not saved")
            return
        final = self.directory / f"{index}-{step.stage_type}"
        partial = final.with_name(f".{final.name}.partial")
        objects = {"model": model}
        for attr in CHECKPOINTED_MODELS:
            obj = getattr(ctx, attr)
            if obj is not None and self._saved.get(attr) is not obj:
                objects[attr] = obj
        try:
            partial.mkdir(parents=True)
            files = {}
            for role, obj in objects.items():
                ctx.adapter.checkpoint_save(obj, partial / f"{role}.ckpt")
                files[role] = {"name": f"{role}.ckpt", "sha256": _file_sha256(partial / f"{role}.ckpt")}
            meta = {
                "format": FORMAT,
                "key": self.keys[index],
                "saved": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "step": step.model_dump(mode="json"),
                "budget_references": ctx.budget_references,
                "files": files,
            }
            (partial / META).write_text(json.dumps(meta, indent=1))
            partial.rename(final)
        except Exception as exc:  # a checkpoint is a convenience: the build must not fail for it
            shutil.rmtree(partial, ignore_errors=True)
            self.ui.warn(
                f"{self._stage(index)} — no checkpoint written ({_line(exc)}); --resume runs it again"
            )
            return
        self._saved.update({role: obj for role, obj in objects.items() if role != "model"})
        self._next = index + 1

    def _stage(self, index: int) -> str:
        return f"stage {index}: {self.recipe.stages[index].type}"

    def _read(self, index: int) -> dict[str, Any] | None:
        """Checkpoint `index`'s metadata (its Step parsed) when it matches the recipe and its files are intact."""
        found = sorted(self.directory.glob(f"{index}-*")) if self.directory.is_dir() else []
        if not found:
            return None
        path = found[0]
        try:
            meta = json.loads((path / META).read_text())
            if meta["key"] != self.keys[index]:
                measured = any(reads_targets(c) for c in self.recipe.stages[: index + 1])
                self.ui.info(
                    f"{self._stage(index)} — checkpoint ignored: made for another model, data, seed, stage "
                    f"configs up to it{', exports, devices, profile' if measured else ''} or version of "
                    f"edgecompress or {self.recipe.model.resolved_framework}"
                )
                return None
            for entry in meta["files"].values():
                if _file_sha256(path / entry["name"]) != entry["sha256"]:
                    raise ValueError(f"{entry['name']} does not match its checksum")
            meta["step"] = Step.model_validate(meta["step"])
        except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
            self.ui.warn(f"{self._stage(index)} — checkpoint ignored: damaged ({_line(exc)})")
            return None
        meta["path"] = path
        return meta

    def _load(self, metas: list[dict[str, Any]], adapter: Any) -> dict[str, Any]:
        """The model of the last checkpoint, and each context model from the last checkpoint that carries it."""
        out = {"model": adapter.checkpoint_load(metas[-1]["path"] / metas[-1]["files"]["model"]["name"])}
        for attr in CHECKPOINTED_MODELS:
            meta = next((m for m in reversed(metas) if attr in m["files"]), None)
            if meta is not None:
                out[attr] = adapter.checkpoint_load(meta["path"] / meta["files"][attr]["name"])
        return out

    def _remove_from(self, index: int) -> None:
        """Delete the checkpoints (and partly written ones) of stage `index` and later."""
        for path in self.directory.iterdir() if self.directory.is_dir() else []:
            head = path.name.lstrip(".").split("-", 1)[0]
            if head.isdigit() and int(head) >= index:
                shutil.rmtree(path, ignore_errors=True)


def _model_files(recipe: Recipe, recipe_path: Path) -> dict[str, str]:
    """sha256 of the files the model section names: a python entry's file (not the modules it imports), a
    .pt2 or TorchScript file, a state_dict checkpoint."""
    spec = recipe.model
    names = [spec.source.rpartition(":")[0] or spec.source, spec.checkpoint]
    paths = {name: resolve_path(name, recipe_path) for name in names if name}
    return {name: _file_sha256(path) for name, path in paths.items() if path.is_file()}


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
