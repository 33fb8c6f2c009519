"""`edgecompress devices calibrate DEVICE --recipe R`: a device's latency tables filled for a recipe's model
ahead of the build, so the build (precision plans, round_to auto) reads them from the cache.

For every export of the recipe on the device, every layer of the model is measured on the export's runtime
in fp32 and, for int8/auto exports, in int8 and in the other forms an int8 plan can choose (decomposed
hardswish, float between int8 neighbours). The layers are those of the model as loaded: a pruning stage
changes widths, and the build measures what those new shapes add.
"""

from __future__ import annotations

import time
from pathlib import Path

from edgecompress.console import UI
from edgecompress.errors import RecipeError


def calibrate_device(device_name: str, recipe_path: Path, *, recalibrate: bool, verbosity: int) -> None:
    from edgecompress.latency.model import LatencyModel
    from edgecompress.recipe import load_recipe
    from edgecompress.registry import EXPORTERS, FRAMEWORKS
    from edgecompress.specs import load_device

    recipe = load_recipe(recipe_path)
    device = load_device(device_name, base_dir=Path(recipe_path).parent)
    ui = UI(verbosity=verbosity)
    targets: dict[str, bool] = {}  # runtime -> whether an int8/auto export runs there
    for e in recipe.export:
        if (e.device or recipe.devices[0]) == device_name:
            runtime = EXPORTERS.get(e.format).runtime
            targets[runtime] = targets.get(runtime, False) or e.precision in ("int8", "auto")
    if not targets:
        raise RecipeError(
            f"{recipe_path}: no export of the recipe is planned for device '{device_name}' (its devices: "
            f"{', '.join(recipe.devices)}; an export's `device:` picks another)"
        )
    adapter = FRAMEWORKS.get(recipe.model.resolved_framework)()
    ui.info(f"loading model {recipe.model.source}")
    model = adapter.load(recipe.model, recipe_path)
    layers = adapter.latency_layers(model, list(recipe.model.input_shape))
    threads = recipe.profile.threads or device.threads
    start = time.perf_counter()
    for runtime, quantized in sorted(targets.items()):
        lm = LatencyModel(device, runtime, threads=threads, ui=ui, recalibrate=recalibrate)
        graphs = [layer.graph("fp32") for layer in layers]
        if quantized:
            graphs += [layer.graph("int8") for layer in layers]
            graphs += [layer.graph("fp32", boundaries="int8") for layer in layers]
            graphs += [
                layer.graph("int8", form="decomposed") for layer in layers if layer.kind == "hardswish"
            ]
        before = lm.measured_count
        lm.latencies(graphs, what="layers")
        ui.info(
            f"{device.name}/{runtime}: {len(graphs)} layer graphs, {lm.measured_count - before} measured now, "
            f"table {lm.table.path_for(lm.key)}"
        )
    ui.info(f"calibrated {device.name} for {recipe.name} in {time.perf_counter() - start:.1f} s")
