"""One build: load -> stages -> export -> verify -> profile -> report -> gates.

The build runs in a temporary directory beside the output directory and replaces it only when every
step worked; a failed build leaves the previous output untouched. A failed gate is not a failed build:
the output and report are written, then GateFailed is raised. Every finished stage is checkpointed beside the
output (checkpoints.py); `resume` skips the stages whose checkpoints match the recipe.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from edgecompress.checkpoints import StageCheckpoints, checkpoint_dir
from edgecompress.console import UI
from edgecompress.deployability import Deployability
from edgecompress.environment import RECORDED_PACKAGES, machine_info, package_versions
from edgecompress.errors import ArtifactError, DeviceError, GateFailed, RecipeError
from edgecompress.gates import evaluate_gates
from edgecompress.recipe import ExportSpec, Recipe, load_recipe
from edgecompress.registry import EXPORTERS, FRAMEWORKS, RUNNERS, STAGES, import_object
from edgecompress.report import (
    REFERENCE_ROLES,
    ArtifactResult,
    CrossRuntime,
    DeviceParity,
    DeviceStatus,
    Report,
    Step,
)
from edgecompress.sparsity_lint import lint_lines
from edgecompress.specs import DeviceProfile, load_device
from edgecompress.stages.base import precheck_stages, run_stage
from edgecompress.stages.prune import precrop_reference


@dataclass(frozen=True)
class _Models:
    float_model: Any  # the model before `quantize` (the final model when there is none)
    final: Any


@dataclass(frozen=True)
class _Exported:
    artifact: Any
    parity: Any
    logits: np.ndarray
    role: str
    requested_precision: str | None = None
    divergent_layers: tuple[str, ...] = ()
    gzip_bytes: int | None = None
    zstd_bytes: int | None = None
    sparsity: Any = None


def _twins(recipe: Recipe) -> list[ExportSpec]:
    """An fp32 export per format that has int8 but no fp32 artifact: int8 speed is only news next to it."""
    formats = {e.format for e in recipe.export if e.precision in ("int8", "auto")}
    have = {e.format for e in recipe.export if e.precision == "fp32"}
    names = {e.artifact_name for e in recipe.export}
    return [
        ExportSpec(format=fmt, precision="fp32", name=f"{fmt}-fp32-twin")
        for fmt in sorted(formats - have)
        if f"{fmt}-fp32-twin" not in names
    ]


def cross_runtime_agreement(exported: list[_Exported]) -> list[CrossRuntime]:
    """Top-1 agreement between artifacts of the same precision on different runtimes, on the test split."""
    out = []
    for i, a in enumerate(exported):
        for b in exported[i + 1 :]:
            if a.role in REFERENCE_ROLES or b.role in REFERENCE_ROLES:
                continue  # another model
            if a.artifact.precision == b.artifact.precision and a.artifact.runtime != b.artifact.runtime:
                agreement = float((a.logits.argmax(1) == b.logits.argmax(1)).mean())
                out.append(CrossRuntime(a=a.artifact.name, b=b.artifact.name, agreement=agreement))
    return out


def load_context(
    recipe: Recipe, recipe_path: Path, *, workdir: Path, ui: UI, recalibrate: bool = False
) -> tuple[Any, Any]:
    """The recipe's data and model loaded and checked against each other: (RunContext, model)."""
    from edgecompress.context import RunContext
    from edgecompress.data import load_data

    adapter = FRAMEWORKS.get(recipe.model.resolved_framework)()
    ui.info(f"[bold]edgecompress build[/bold] {recipe.name}: loading data '{recipe.data.dataset}'")
    data = load_data(recipe.data, recipe_path, seed=recipe.seed)
    expected = tuple(recipe.model.input_shape[1:])
    if expected != data.sample_shape:
        raise RecipeError(
            f"{recipe_path}: model.input_shape {list(recipe.model.input_shape)} does not match the data: "
            f"{recipe.data.layout} images of {data.sample_shape} (data.image_size, data.channels, data.layout)"
        )
    ui.info(f"loading model {recipe.model.source}")
    model = adapter.load(recipe.model, recipe_path)
    adapter.check(model, list(recipe.model.input_shape), data.num_classes)
    ctx = RunContext(
        recipe=recipe,
        recipe_path=recipe_path,
        workdir=workdir,
        adapter=adapter,
        data=data,
        ui=ui,
        recalibrate=recalibrate,
    )
    return ctx, model


def check_with_model(recipe: Recipe, recipe_path: Path) -> list[str]:
    """`validate` for recipes with pattern sparsity: the model and data loaded (shapes known), each such
    stage's precheck run (a glob matching no layer, a pattern no layer takes: RecipeError); returns the
    sparsity lint lines."""
    from edgecompress.registry import STAGES

    pattern = [(i, s) for i, s in enumerate(recipe.stages) if getattr(s, "pattern", False)]
    if not pattern:
        return []
    ctx, model = load_context(recipe, recipe_path, workdir=recipe_path.parent, ui=UI(verbosity=0))
    for i, config in pattern:
        ctx.current_stage = i
        STAGES.get(config.type)(config).precheck(model, ctx, i)
    devices = [load_device(d, base_dir=recipe_path.parent) for d in recipe.devices]
    return lint_lines(recipe, devices)


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Replace out_dir by tmp; the old output is removed only after the new one is in place."""
    backup = None
    if out_dir.exists():
        backup = out_dir.with_name(f".{out_dir.name}.old-{int(time.time() * 1000)}")
        out_dir.rename(backup)
    tmp.rename(out_dir)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


class _Build:
    """The state of one build; `run()` does the work in `self.tmp`."""

    def __init__(
        self,
        recipe: Recipe,
        recipe_path: Path,
        tmp: Path,
        ui: UI,
        *,
        profile: bool,
        checkpoints: StageCheckpoints,
        recalibrate: bool = False,
        resume: bool = False,
    ) -> None:
        self.recipe = recipe
        self.recipe_path = recipe_path
        self.tmp = tmp
        self.ui = ui
        self.profile = profile and recipe.profile.enabled
        self.recalibrate = recalibrate
        self.checkpoints = checkpoints
        self.resume = resume
        #: The precision planner of the build's int8/auto exports (made on the first one).
        self.planner: Any = None
        #: Devices whose profiling failed: name -> the error (the report marks them; the build exits 1).
        self.device_errors: dict[str, str] = {}

    def _step(
        self,
        ctx: Any,
        model: Any,
        name: str,
        stage_type: str | None,
        seconds: float,
        notes: dict[str, Any],
        images: int = 0,
    ) -> Step:
        adapter, data = ctx.adapter, ctx.data
        stats = adapter.stats(model, ctx.input_shape)
        test, val = adapter.accuracy(model, data.test), adapter.accuracy(model, data.val)
        step = Step(
            name=name,
            stage_type=stage_type,
            test_accuracy=test,
            val_accuracy=val,
            params=stats.params,
            macs=stats.macs,
            seconds=seconds,
            notes=notes,
            images=images,
        )
        speed = f", {step.images_per_second:,.0f} images/s" if step.images_per_second else ""
        self.ui.info(
            f"  {name}: test acc {test:.4f}, {stats.macs / 1e6:.2f} M MACs, {stats.params:,} params "
            f"({seconds:.1f} s{speed})"
        )
        return step

    def _run_stages(self, ctx: Any, model: Any) -> tuple[list[Step], str, _Models]:
        """Every stage in order; returns the steps, the reference step's name and the float/final models."""
        steps = [self._step(ctx, model, "baseline", None, 0.0, {})]
        reference = steps[0].name
        float_model = model
        # resumed before the prechecks: it restores what they would measure again (latency budget references)
        resumed = self.checkpoints.resume(ctx) if self.resume else None
        precheck_stages(model, ctx)
        if resumed is not None:  # no stage after a quantize one is checkpointed: the model is a float one
            steps += resumed.steps
            model = float_model = resumed.model
            reference = resumed.reference or reference
        start = len(steps) - 1
        for i, config in enumerate(self.recipe.stages[start:], start=start):
            self.ui.info(f"[bold]stage {i}: {config.type}[/bold]")
            t, trained, taught = time.perf_counter(), ctx.adapter.trained_images, ctx.teacher is not None
            model = run_stage(config, i, model, ctx)
            if not taught and ctx.teacher is not None:  # the reference is the model the teacher copies
                reference = steps[-1].name
            if config.type != "quantize":
                float_model = model
            name = f"{i}:{config.type}"
            seconds, images = time.perf_counter() - t, ctx.adapter.trained_images - trained
            steps.append(self._step(ctx, model, name, config.type, seconds, ctx.notes.get(i, {}), images))
            self.checkpoints.save(i, ctx, model, steps[-1])
        if ctx.teacher is None:
            reference = steps[-1].name
        return steps, reference, _Models(float_model=float_model, final=model)

    def _export_all(self, ctx: Any, models: _Models, devices: list[DeviceProfile]) -> list[_Exported]:
        """Export every artifact (plus fp32 twins of int8 ones) and check it on its runtime.

        int8 artifacts come from the quantized model; float ones from the model before `quantize` — the fp32
        export "of the same model" the int8 speedup is measured against.
        """
        from edgecompress.exporters.parity import compare_logits, run_artifact

        adapter, data, ui = ctx.adapter, ctx.data, self.ui
        threads = self.recipe.profile.threads or (devices[0].threads if devices else 2)
        references: dict[int, np.ndarray] = {}
        exported: list[_Exported] = []
        for spec, role in [(s, "export") for s in self.recipe.export] + [
            (s, "fp32-twin") for s in _twins(self.recipe)
        ]:
            ui.info(
                f"[bold]export {spec.artifact_name}[/bold]"
                + (" (fp32 twin for the int8 speedup)" if role != "export" else "")
            )
            requested = spec.precision
            source, spec = self._source(ctx, models, spec, devices)
            if id(source) not in references:
                references[id(source)] = adapter.predict(source, data.test.x)
            reference = references[id(source)]
            artifact = self._exported_before(spec, source, models)
            if artifact is None:
                artifact = EXPORTERS.get(spec.format)().export(source, spec, ctx, self.tmp)
            out = run_artifact(artifact, data.test.x, num_outputs=reference.shape[1], threads=threads, ui=ui)
            parity = compare_logits(
                out.logits, reference, data.test.y, execution_precision=out.execution_precision
            )
            what = "float" if source is models.float_model else "quantized"
            if source is not models.float_model and source is not models.final:
                what = "derived int8"
            ui.info(
                f"  {artifact.name}: test acc {parity.accuracy:.4f}, top-1 agreement {parity.agreement:.4f} "
                f"with the {what} {ctx.framework} model, max abs diff {parity.max_abs_diff:.2e}, "
                f"{artifact.size_bytes / 1024:.1f} KiB"
            )
            divergent: tuple[str, ...] = ()
            if artifact.precision == "int8" and parity.agreement < self.recipe.parity.min_agreement:
                divergent = self._locate_divergence(source, artifact, data.test.x[:16])
            exported.append(
                _Exported(
                    artifact,
                    parity,
                    out.logits,
                    role,
                    requested_precision=requested if requested != artifact.precision else None,
                    divergent_layers=divergent,
                )
            )
        exported += self._references(ctx, threads)
        return self._sparsity_checked(ctx, models, exported)

    def _references(self, ctx: Any, threads: int) -> list[_Exported]:
        """The models before pruning exported beside the artifacts (a latency budget's unpruned model, a
        pattern-sparsity stage's dense one), checked like the others (against the framework model each was
        exported from) and profiled with them."""
        from edgecompress.exporters.parity import compare_logits, run_artifact

        backend = getattr(STAGES.get("prune"), "references", {}).get(ctx.framework)
        if (ctx.budget_unpruned is None and ctx.sparsity_dense is None) or backend is None:
            return []
        out = []
        what = {
            "unpruned-reference": "the unpruned model: the latency budget's reference",
            "dense-reference": "the dense model: what the sparsity buys is measured against it",
        }
        for artifact, source, role in import_object(backend)(ctx, self.tmp):
            self.ui.info(f"[bold]export {artifact.name}[/bold] ({what[role]})")
            reference = ctx.adapter.predict(source, ctx.data.test.x)
            run = run_artifact(
                artifact, ctx.data.test.x, num_outputs=reference.shape[1], threads=threads, ui=self.ui
            )
            parity = compare_logits(
                run.logits, reference, ctx.data.test.y, execution_precision=run.execution_precision
            )
            out.append(_Exported(artifact, parity, run.logits, role))
        return out

    def _sparsity_checked(self, ctx: Any, models: _Models, exported: list[_Exported]) -> list[_Exported]:
        """Every artifact's compressed sizes; with a sparsity plan, each sparse artifact's weights read back
        from its file and checked against the plan, layer by layer (a layer that lost its pattern is a
        warning here and a row marked NO in the report)."""
        from edgecompress.exporters.sparsity_check import check_artifact, compressed_sizes
        from edgecompress.sparsity import latest_plan

        plan = latest_plan(ctx.notes)
        weights = ctx.adapter.weights(models.float_model) if plan is not None else {}
        out = []
        for item in exported:
            gz, zs = compressed_sizes(item.artifact.files)
            found = None
            if plan is not None and item.role in ("export", "fp32-twin"):
                try:
                    found = check_artifact(item.artifact.path, plan, weights)
                except Exception as exc:  # a diagnosis: its failure must not fail the build
                    self.ui.warn(f"{item.artifact.name}: could not read its weights back ({exc})")
                if found is not None:
                    lost = [f"{r.layer} ({r.detail})" for r in found.layers if not r.holds]
                    if lost:
                        self.ui.warn(
                            f"{item.artifact.name}: the sparsity pattern does not hold in the file for {'; '.join(lost[:3])}"
                        )
                    else:
                        self.ui.info(
                            f"  {item.artifact.name}: every sparse layer holds its pattern in the file "
                            f"({len(found.layers)} layers, {found.file_sparsity:.1%} of its weights zero)"
                        )
            out.append(replace(item, gzip_bytes=gz, zstd_bytes=zs, sparsity=found))
        return out

    def _exported_before(self, spec: ExportSpec, source: Any, models: _Models) -> Any:
        """The artifact of `spec` when the precision planner already exported the same thing for its race
        (copied under the export's name), else None."""
        if self.planner is None:
            return None
        from edgecompress.exporters.base import copy_artifact

        if source is models.float_model:
            ops = None
        elif source is models.final:
            ops = {}
        else:
            ops = dict(getattr(source, "plan", None) or {})
        done = self.planner.exported(spec, ops)
        return None if done is None else copy_artifact(done, spec.artifact_name, self.tmp)

    def _locate_divergence(self, source: Any, artifact: Any, images: np.ndarray) -> tuple[str, ...]:
        """The layers where an int8 artifact under the parity threshold departs from its quantized graph."""
        from edgecompress.exporters.parity_layers import compare_layers

        try:
            layers = compare_layers(source, artifact.path, artifact.runtime, images)
        except Exception as exc:  # the comparison is a diagnosis; its failure must not fail the build
            self.ui.warn(f"{artifact.name}: could not compare its layers with the quantized graph ({exc})")
            return ()
        divergent = tuple(d.describe() for d in layers if d.divergent)
        if divergent:
            self.ui.warn(f"{artifact.name} departs from its quantized graph at: {'; '.join(divergent[:3])}")
        elif layers:
            self.ui.warn(
                f"{artifact.name}: every matched layer is within rounding of its quantized graph "
                f"({sum(d.matched for d in layers)} of {len(layers)} quantized tensors compared); the disagreement "
                "is rounding accumulating over near-tie images"
            )
        return divergent

    def _source(
        self, ctx: Any, models: _Models, spec: ExportSpec, devices: list[DeviceProfile]
    ) -> tuple[Any, ExportSpec]:
        """The model an export lowers, and the spec its exporter gets: float exports take the model before
        `quantize`; int8 and auto ones the quantized model derived by their precision plan (the fp32 model
        when an auto plan found float fastest), exported at the precision the plan chose."""
        if spec.precision not in ("int8", "auto"):
            return models.float_model, spec
        if ctx.framework not in STAGES.get("quantize").plan_backends:  # int8 as the quantize stage made it
            return models.final, spec
        from edgecompress.precision import Planner

        if self.planner is None:
            self.planner = Planner(
                ctx, quantized=models.final, float_model=models.float_model, devices=devices, ui=self.ui
            )
        plan = self.planner.plan(spec)
        name = spec.artifact_name
        if plan.float_model:
            return models.float_model, spec.model_copy(update={"precision": "fp32", "name": name})
        source = self.planner.derive(plan.ops) if plan.ops else models.final
        return source, spec.model_copy(update={"precision": "int8", "name": name})

    def _profile_all(self, exported: list[_Exported], devices: list[DeviceProfile]) -> list[ArtifactResult]:
        """Measure every artifact on every device in `profile.rounds` fresh-process rounds, interleaved
        (A, B, C, A, B, C, ...) so that a slow spell of the machine falls on all artifacts alike; the per-op
        profile is taken in the first round only."""
        from edgecompress.profiling import combine_rounds

        spec = self.recipe.profile
        rounds: dict[tuple[str, str], list[Any]] = {}
        here: dict[str, list[Any]] = {}
        for device in devices if self.profile else []:
            here[device.name] = [e.artifact for e in exported if e.artifact.runtime in device.runtimes]
            for artifact in (e.artifact for e in exported if e.artifact.runtime not in device.runtimes):
                self.ui.warn(
                    f"{device.name} has no {artifact.runtime} runtime; {artifact.name} not profiled there"
                )
        runners = {d.name: RUNNERS.get(d.connection.runner)(ui=self.ui) for d in devices if d.name in here}
        total = spec.rounds * sum(len(v) for v in here.values())
        if here:
            self.ui.info(
                f"profiling {total // spec.rounds} artifact×device pairs on {', '.join(here)}: {spec.rounds} "
                f"interleaved fresh-process round{'s' if spec.rounds > 1 else ''} of {spec.runs} timed runs each"
            )
        # energy: once per artifact (the first round), where the device has a source; else estimated
        energy = spec.energy or bool(self.recipe.gates.max_energy_mj)
        for device in (d for d in devices if d.name in here and energy and d.connection.mode == "native"):
            self.ui.warn(
                f"{device.name}: runs a native benchmark tool (connection.mode: native); its energy is "
                "estimated from the power model, not measured (measurement needs measure.py's sampler)"
            )
        for device in (
            d
            for d in devices
            if d.name in here and energy and d.energy is None and d.connection.mode != "native"
        ):
            self.ui.warn(
                f"{device.name}: no energy source in its profile; its energy is estimated from the power model"
                + ("" if device.power else " (it has none either: no energy figure)")
            )
        if energy and any(d.energy for d in devices if d.name in here and d.connection.mode != "native"):
            self.ui.info(
                f"measuring energy: idle, {spec.energy_windows} windows of {spec.energy_window_seconds:g} s of "
                "inference, idle again, per artifact"
            )
        with self.ui.progress("profiling", total=total) as task:
            for r in range(spec.rounds):
                if r and spec.cooldown_seconds:
                    time.sleep(spec.cooldown_seconds)
                for device in (d for d in devices if d.name in here):
                    if device.name in self.device_errors:
                        continue
                    try:
                        for artifact in here[device.name]:
                            self.ui.debug(
                                f"profiling {artifact.name} on {device.name}, round {r + 1}/{spec.rounds}"
                            )
                            rounds.setdefault((artifact.name, device.name), []).append(
                                runners[device.name].run(
                                    artifact,
                                    device,
                                    runs=spec.runs,
                                    warmup_seconds=spec.warmup_seconds,
                                    threads=spec.threads or device.threads,
                                    op_profile=r == 0,
                                    energy=(spec.energy_window_seconds, spec.energy_windows)
                                    if energy and r == 0 and device.energy is not None
                                    else None,
                                )
                            )
                            task.advance()
                    except (DeviceError, ArtifactError) as exc:
                        self._device_failed(device, exc)
        device_parity = self._parity_on_devices(exported, [d for d in devices if d.name in here])
        for name in self.device_errors:  # a device that failed (profiling or parity) keeps no results
            for artifact in here.get(name, []):
                rounds.pop((artifact.name, name), None)
        artifacts = []
        for item in exported:
            artifact = item.artifact
            measurements = {
                device.name: combine_rounds(rounds[(artifact.name, device.name)])
                for device in devices
                if (artifact.name, device.name) in rounds
            }
            artifacts.append(
                ArtifactResult(
                    name=artifact.name,
                    format=artifact.format,
                    runtime=artifact.runtime,
                    precision=artifact.precision,
                    role=item.role,
                    files=[str(Path(f).relative_to(self.tmp)) for f in artifact.files],
                    size_bytes=artifact.size_bytes,
                    parity=item.parity,
                    measurements=measurements,
                    device_parity=device_parity.get(artifact.name, {}),
                    requested_precision=item.requested_precision,
                    divergent_layers=list(item.divergent_layers),
                    gzip_bytes=item.gzip_bytes,
                    zstd_bytes=item.zstd_bytes,
                    sparsity=item.sparsity,
                    notes=_sidecar_notes(artifact),
                )
            )
        return artifacts

    def _parity_on_devices(
        self, exported: list[_Exported], devices: list[DeviceProfile]
    ) -> dict[str, dict[str, DeviceParity]]:
        """profile.parity_on_device: every artifact's outputs on each remote device against its local run.
        A device that fails here is marked like one that fails profiling."""
        from edgecompress.exporters.parity import compare_logits

        if not self.recipe.profile.parity_on_device:
            return {}
        x, y = self.test_split
        out: dict[str, dict[str, DeviceParity]] = {}
        for device in devices:
            if device.connection.runner == "local" or device.name in self.device_errors:
                continue
            runner = RUNNERS.get(device.connection.runner)()
            here = [e for e in exported if e.artifact.runtime in device.runtimes]
            try:
                with self.ui.progress(f"parity on {device.name}", total=len(here)) as task:
                    for item in here:
                        logits, precision = runner.outputs(
                            item.artifact, device, x, threads=self.recipe.profile.threads or device.threads
                        )
                        p = compare_logits(logits, item.logits, y, execution_precision=precision)
                        out.setdefault(item.artifact.name, {})[device.name] = DeviceParity(
                            n=p.n,
                            agreement=p.agreement,
                            max_abs_diff=p.max_abs_diff,
                            accuracy=p.accuracy,
                            execution_precision=precision,
                        )
                        self.ui.info(
                            f"  {item.artifact.name} on {device.name}: top-1 agreement {p.agreement:.4f} with the "
                            f"local run, max abs diff {p.max_abs_diff:.2e}"
                        )
                        task.advance()
            except (DeviceError, ArtifactError) as exc:
                self._device_failed(device, exc)
                for results in out.values():
                    results.pop(device.name, None)
        return out

    def _device_failed(self, device: DeviceProfile, exc: Exception) -> None:
        """The device is marked in the report and its results are left out; the other devices go on. An
        ArtifactError here is the device's: every artifact loaded and ran on this machine (parity) before."""
        self.device_errors[device.name] = str(exc)
        self.ui.warn(f"{exc} — {device.name}'s results are left out; the other devices go on")

    def _diagnose_int8(
        self, exported: list[_Exported], artifacts: list[ArtifactResult]
    ) -> list[Deployability]:
        """For every int8 artifact on every device: its measured speedup over the fp32 export of the same
        model on the same runtime, and likely causes when it is not faster (said plainly on the console)."""
        from edgecompress.deployability import diagnose

        paths = {e.artifact.name: e.artifact.path for e in exported}
        out = []
        for a in artifacts:
            if a.precision != "int8" or a.role in REFERENCE_ROLES:
                continue
            twin = next(
                (
                    f
                    for f in artifacts
                    if f.format == a.format and f.precision == "fp32" and f.role not in REFERENCE_ROLES
                ),
                None,
            )
            for device, m in a.measurements.items() if twin else []:
                if device not in twin.measurements:
                    continue
                result = diagnose(int8=m, fp32=twin.measurements[device], int8_path=paths[a.name])
                out.append(result)
                style = "green" if result.faster else "bold yellow"
                self.ui.console.print(
                    f"[{style}]int8 on {device}/{a.runtime}[/{style}]: {result.explanation}", highlight=False
                )
        return out

    def run(self, devices: list[DeviceProfile]) -> Report:
        t0 = time.perf_counter()
        recipe, ui = self.recipe, self.ui
        lint = lint_lines(recipe, devices)  # empty without a pattern-sparsity stage
        for line in lint:
            ui.info(line)
        ctx, model = load_context(
            recipe, self.recipe_path, workdir=self.tmp, ui=ui, recalibrate=self.recalibrate
        )
        adapter, data = ctx.adapter, ctx.data
        self.test_split = (data.test.x, data.test.y)
        t = time.perf_counter()
        steps, reference, models = self._run_stages(ctx, model)
        cropping = precrop_reference.measure(ctx, steps)
        phases = {"stages": time.perf_counter() - t}
        t = time.perf_counter()
        adapter.save(models.final, self.tmp / f"model{adapter.model_suffix}", list(recipe.model.input_shape))
        try:
            exported = self._export_all(ctx, models, devices)
        finally:
            if self.planner is not None:
                self.planner.close()
        phases["export"] = time.perf_counter() - t
        t = time.perf_counter()
        artifacts = self._profile_all(exported, devices)
        phases["profile"] = time.perf_counter() - t
        cross = cross_runtime_agreement(exported)
        deployability = self._diagnose_int8(exported, artifacts)
        ref_step = next(s for s in steps if s.name == reference)
        return Report(
            edgecompress_version=package_versions("edgecompress").get("edgecompress", "unknown"),
            recipe_name=recipe.name,
            recipe_hash=recipe.content_hash(),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            seed=recipe.seed,
            framework=adapter.name,
            machine=machine_info(),
            versions=package_versions(*RECORDED_PACKAGES),
            data={
                "dataset": recipe.data.dataset,
                "train": len(data.train),
                "val": len(data.val),
                "test": len(data.test),
                "calibration": len(data.calibration),
                "num_classes": data.num_classes,
                **data.describe(),
            },
            steps=steps,
            reference_step=reference,
            artifacts=artifacts,
            cross_runtime=cross,
            sparsity_lint=lint,
            deployability=deployability,
            precision_plans=list(self.planner.plans) if self.planner is not None else [],
            precrop_reference=cropping,
            gates=evaluate_gates(recipe, steps, ref_step, artifacts, cross),
            devices=[
                DeviceStatus(
                    name=d.name,
                    description=d.description,
                    runner=d.connection.runner,
                    host=d.connection.host,
                    error=self.device_errors.get(d.name),
                )
                for d in devices
            ],
            wall_seconds=time.perf_counter() - t0,
            phase_seconds=phases,
        )


def write_outputs(report: Report, recipe: Recipe, directory: Path) -> None:
    """report.json (canonical), report.md, report.html (self-contained: inline CSS and SVG plots, nothing
    fetched; it opens with the artifact to ship per device), recipe.lock.yaml."""
    from edgecompress.report_html import render_html  # matplotlib and jinja2 load only when writing

    (directory / "report.json").write_text(report.model_dump_json(indent=2))
    (directory / "report.md").write_text(report.to_markdown())
    try:
        (directory / "report.html").write_text(render_html(report), encoding="utf-8")
    except Exception as exc:  # a plotting or template failure must not throw the finished build away
        import warnings

        warnings.warn(f"report.html not written: {type(exc).__name__}: {exc}", stacklevel=2)
    lock = {
        "recipe_hash": report.recipe_hash,
        "seed": recipe.seed,
        "created": report.created,
        "versions": report.versions,
        "machine": report.machine,
        "recipe": json.loads(recipe.model_dump_json()),
    }
    if report.precision_plans:
        from edgecompress.precision import lock_entry

        lock["plans"] = {plan.artifact: lock_entry(plan) for plan in report.precision_plans}
    (directory / "recipe.lock.yaml").write_text(yaml.safe_dump(lock, sort_keys=False))


def run_build(
    recipe_path: str | Path,
    *,
    out: str | Path | None = None,
    verbosity: int = 1,
    profile: bool = True,
    recalibrate: bool = False,
    resume: bool = False,
) -> Report:
    """Build the recipe; return the report. Raises RecipeError (bad input), other EdgeCompressErrors (the
    build failed; previous output untouched), or GateFailed (output written, a gate did not pass).

    `resume`: skip the stages whose checkpoints (written by every build, see checkpoints.py) match the recipe."""
    from edgecompress.summary import print_summary

    recipe_path = Path(recipe_path)
    recipe = load_recipe(recipe_path)
    ui = UI(verbosity=verbosity)
    devices = [load_device(d, base_dir=recipe_path.parent) for d in recipe.devices]
    out_dir = Path(out) if out else Path("runs") / recipe.name
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    checkpoints = StageCheckpoints(checkpoint_dir(out_dir), recipe, recipe_path, ui)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    try:
        report = _Build(
            recipe,
            recipe_path,
            tmp,
            ui,
            profile=profile,
            checkpoints=checkpoints,
            recalibrate=recalibrate,
            resume=resume,
        ).run(devices)
        write_outputs(report, recipe, tmp)
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print_summary(report, out_dir, ui)
    if report.failed_devices:
        raise DeviceError(
            "\n".join(
                f"device {d.name} failed: {d.error.splitlines()[0] if d.error else ''}"
                for d in report.failed_devices
            )
            + f"\nthe other devices' results are in {out_dir / 'report.md'}"
        )
    failed = report.failed_gates
    if failed:
        raise GateFailed("; ".join(g.message for g in failed))
    return report


def _sidecar_notes(artifact: Any) -> dict[str, str]:
    """The exporter's notes in the artifact's sidecar (`<name>.json` beside it), as text."""
    try:
        notes = json.loads(Path(artifact.path).with_suffix(".json").read_text()).get("notes") or {}
    except (OSError, ValueError):
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in notes.items()}
