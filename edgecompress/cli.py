"""The `edgecompress` command. Heavy modules are imported inside commands, never at start-up.

Exit codes: 0 ok, 1 the run failed, 2 the input (recipe, files, data, options) is wrong, 3 a gate failed,
130 stopped by SIGINT (Ctrl-C), 143 stopped by SIGTERM; a stopped build removes its temporary files and
keeps the previous output.
"""

from __future__ import annotations

import json
import signal
import sys
import traceback
import warnings
from pathlib import Path
from typing import Annotated

import typer

from edgecompress.errors import EdgeCompressError, GateFailed, RecipeError, Terminated

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Compress a trained model for edge devices, export it to TFLite and OpenVINO, and measure it there.",
)

_state = {"verbosity": 1, "debug": False}

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Only errors and the final line.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Per-epoch lines and more detail.")]


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


def _verbosity(quiet: bool, verbose: bool) -> int:
    if quiet and verbose:
        raise RecipeError("--quiet and --verbose exclude each other")
    return 0 if quiet else 2 if verbose else 1


@app.command()
def build(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output directory [default: runs/<name>].")
    ] = None,
    no_profile: Annotated[bool, typer.Option("--no-profile", help="Skip latency/memory profiling.")] = False,
    recalibrate: Annotated[
        bool,
        typer.Option("--recalibrate", help="Rebuild the devices' latency tables instead of using the cache."),
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Skip the stages an earlier build of this output already ran for the same recipe "
            "(its checkpoints in <out parent>/.edgecompress-stages/<out name>/).",
        ),
    ] = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Run a recipe: stages, export, verify on the runtimes, profile, report, gates."""
    from edgecompress.pipeline import run_build

    run_build(
        recipe,
        out=out,
        verbosity=_verbosity(quiet, verbose),
        profile=not no_profile,
        recalibrate=recalibrate,
        resume=resume,
    )


@app.command()
def validate(recipe: Annotated[Path, typer.Argument(help="Recipe YAML file.")]) -> None:
    """Check a recipe without running it (keys, values, files, devices, stage/framework support)."""
    from edgecompress.recipe import load_recipe

    r = load_recipe(recipe)
    lint: list[str] = []
    if any(getattr(s, "pattern", False) for s in r.stages):  # shapes matter: the model is loaded
        from edgecompress.pipeline import check_with_model

        lint = check_with_model(r, recipe)
    typer.echo(
        f"{recipe}: ok — {r.model.resolved_framework} model, {len(r.stages)} stage(s) "
        f"[{', '.join(s.type for s in r.stages)}], {len(r.export)} export(s), devices: {', '.join(r.devices)}"
    )
    for line in lint:
        typer.echo(line)


@app.command()
def schema() -> None:
    """Print the recipe's JSON Schema (every stage type included)."""
    from edgecompress.schema import recipe_json_schema

    typer.echo(json.dumps(recipe_json_schema(), indent=2))


@app.command()
def inspect(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file whose model is inspected.")],
    all_layers: Annotated[
        bool, typer.Option("--all", help="List every layer, not only those with weights.")
    ] = False,
) -> None:
    """Print the model's layers, params, MACs and what channel pruning can touch."""
    from rich.console import Console
    from rich.table import Table

    from edgecompress.recipe import load_recipe
    from edgecompress.registry import FRAMEWORKS

    r = load_recipe(recipe)
    adapter = FRAMEWORKS.get(r.model.resolved_framework)()
    model = adapter.load(r.model, recipe)
    shape = list(r.model.input_shape)
    stats = adapter.stats(model, shape)
    table = Table(title=f"{r.model.source}  input {shape}", title_justify="left")
    for col in ("layer", "kind", "params", "MACs", "out ch", "prunable", "note"):
        table.add_column(col, justify="right" if col in {"params", "MACs", "out ch"} else "left")
    for layer in adapter.layers(model, shape):
        if all_layers or layer.params:
            table.add_row(
                layer.name,
                layer.kind,
                f"{layer.params:,}",
                f"{layer.macs:,}",
                "" if layer.out_channels is None else str(layer.out_channels),
                "yes" if layer.prunable else "no",
                layer.note,
            )
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    console.print(f"total: {stats.params:,} params, {stats.macs:,} MACs ({stats.macs / 1e6:.2f} M)")


@app.command()
def profile(
    artifact: Annotated[Path, typer.Argument(help="A .tflite file or an OpenVINO .xml.")],
    device: Annotated[
        str, typer.Option("--device", "-d", help="Device profile name (devices/*.yaml).")
    ] = "desktop",
    threads: Annotated[int | None, typer.Option(help="Inference threads [default: the device's].")] = None,
    runs: Annotated[int, typer.Option(help="Timed runs after warm-up.")] = 200,
    warmup: Annotated[float, typer.Option(help="Seconds of warm-up.")] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the measurements as JSON.")] = False,
) -> None:
    """Profile an existing artifact on a device: latency percentiles, load time, peak memory."""
    from edgecompress.exporters.base import artifact_from_file
    from edgecompress.registry import RUNNERS
    from edgecompress.specs import load_device

    art = artifact_from_file(artifact)
    dev = load_device(device)
    m = RUNNERS.get(dev.connection.runner)().run(
        art, dev, runs=runs, warmup_seconds=warmup, threads=threads or dev.threads
    )
    if as_json:
        typer.echo(m.model_dump_json(indent=2))
        return
    lat = m.latency
    typer.echo(
        f"{artifact} on {dev.name} ({m.runtime} {m.runtime_version}, {m.threads} threads): "
        f"p50 {lat.p50_ms:.3f} ms, p90 {lat.p90_ms:.3f}, p99 {lat.p99_ms:.3f}, mean {lat.mean_ms:.3f} ± {lat.std_ms:.3f} "
        f"over {lat.runs} runs; load {m.load_ms:.1f} ms, first {m.first_inference_ms:.2f} ms, "
        f"peak RSS {m.rss_text} MiB" + (f" (measured by {m.tool})" if m.tool else "")
    )


devices_app = typer.Typer(
    no_args_is_help=False,
    help="Device profiles (devices/*.yaml) and their latency models.",
)
app.add_typer(devices_app, name="devices")


@app.command()
def plan(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file with a latency budget in a prune stage.")],
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Show the channel widths a latency-budget prune stage chooses and the predicted latency of each
    budget's export, before any training (the unpruned reference is exported and timed)."""
    from edgecompress.planning import plan_recipe

    plan_recipe(recipe, verbosity=_verbosity(quiet, verbose))


@devices_app.callback(invoke_without_command=True)
def devices(ctx: typer.Context) -> None:
    """List the device profiles edgecompress knows (devices/*.yaml) and their cached latency tables."""
    if ctx.invoked_subcommand is not None:
        return
    from edgecompress.latency.model import cached_tables
    from edgecompress.specs import load_device, spec_dirs

    seen = set()
    for d in spec_dirs("devices"):
        for f in sorted(d.glob("*.yaml")):
            if f.stem not in seen:
                seen.add(f.stem)
                dev = load_device(f.stem)
                tables = cached_tables(dev.name)
                reach = dev.connection.runner + (f" {dev.connection.host}" if dev.connection.host else "")
                probed = f"probed {dev.probed['when'][:10]}" if dev.probed else "not probed"
                typer.echo(
                    f"{dev.name:<16} {reach:<22} {', '.join(dev.runtimes):<18} {probed:<18} {dev.description}"
                    + (f"  [latency tables: {', '.join(t.stem for t in tables)}]" if tables else "")
                )


@devices_app.command("probe")
def probe(
    target: Annotated[
        str,
        typer.Argument(
            help="ssh://HOST (an alias of ~/.ssh/config or user@host[:port]), adb://SERIAL, or local."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The profile to write: devices/NAME.yaml.")],
    python: Annotated[
        str | None, typer.Option("--python", help="The device's Python (default: python3 on its PATH).")
    ] = None,
    accept_new: Annotated[
        bool,
        typer.Option(
            "--accept-new", help="Trust an unknown host key on first use (recorded in known_hosts)."
        ),
    ] = False,
    workdir: Annotated[
        str | None,
        typer.Option("--workdir", help="Directory on the device for temporary files (adb: /data/local/tmp)."),
    ] = None,
    native: Annotated[
        bool,
        typer.Option(
            "--native",
            help="A device without Python: probe with its shell, profile with its benchmark tools (mode: native).",
        ),
    ] = False,
    benchmark_model: Annotated[
        str | None, typer.Option("--benchmark-model", help="native: LiteRT's benchmark_model on the device.")
    ] = None,
    benchmark_app: Annotated[
        str | None, typer.Option("--benchmark-app", help="native: OpenVINO's benchmark_app on the device.")
    ] = None,
) -> None:
    """Write a device profile by probing the device: CPU, ISA features, memory, OS and kernel, the runtimes
    its Python has, the CPU governor, thermal zones and the energy sources it can read."""
    from edgecompress.device_probe import probe_device

    path, data = probe_device(
        target,
        out,
        python=python,
        accept_new=accept_new,
        workdir=workdir,
        native=native,
        benchmark_model=benchmark_model,
        benchmark_app=benchmark_app,
    )
    cpu, probed = data["cpu"], data["probed"]
    typer.echo(
        f"wrote {path}: {cpu['model']}, {cpu['cores']} cores, {cpu['arch']} ({', '.join(cpu['isa']) or 'no ISA flags'}), "
        f"{data['memory_mb']} MiB, {probed['os']}; runtimes: {', '.join(data['runtimes']) or 'none'}; "
        f"governor {probed['governor'] or 'unknown'}; {len(probed['thermal_zones'])} thermal zones; energy: "
        + (
            ", ".join(e["source"] for e in probed["energy_sources"] if e["readable"])
            or "none readable (estimated)"
        )
    )


@devices_app.command("calibrate")
def calibrate(
    device: Annotated[str, typer.Argument(help="Device profile name (devices/*.yaml).")],
    recipe: Annotated[
        Path, typer.Option("--recipe", "-r", help="Recipe whose model and exports to calibrate for.")
    ],
    recalibrate: Annotated[
        bool, typer.Option("--recalibrate", help="Measure again what the cache already has.")
    ] = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Build DEVICE's latency tables for RECIPE's model ahead of a build: every layer of the model, in every
    precision and form its exports can choose, on each export's runtime."""
    from edgecompress.calibrate import calibrate_device

    calibrate_device(device, recipe, recalibrate=recalibrate, verbosity=_verbosity(quiet, verbose))


#: Third-party warnings that say nothing to a user of edgecompress (shown with --debug): torch's pytree
#: deprecation raised by deep-copying its own exported graphs, and JAX's note on fork() (the converters load
#: JAX; edgecompress's children do not use it).
QUIET_WARNINGS = (
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
    (RuntimeWarning, r"os\.fork\(\) was called"),
)


def main() -> None:
    """Console entry point: maps errors to one line and an exit code (see module docstring)."""
    if "--debug" not in sys.argv:
        for category, message in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        # typer returns a command's exit code under standalone_mode=False, Ctrl-C included (as 130)
        code = app(standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.Abort:
        code = 130
    except typer.exceptions.TyperException as exc:  # usage errors: typer prints them itself
        exc.show()  # type: ignore[attr-defined]
        sys.exit(2)
    except EdgeCompressError as exc:
        if _state["debug"]:
            traceback.print_exc()
        prefix = "gate failed" if isinstance(exc, GateFailed) else "error"
        lines = str(exc).split("; ") if isinstance(exc, GateFailed) else str(exc).splitlines()
        for line in lines or [type(exc).__name__]:
            print(f"{prefix}: {line}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        code = 130
    except Terminated:
        print(
            "interrupted by SIGTERM: stopped; temporary files removed, previous output kept", file=sys.stderr
        )
        sys.exit(Terminated.exit_code)
    except Exception as exc:  # a bug or an unexpected library failure: say so, don't hide it
        if _state["debug"]:
            traceback.print_exc()
        print(
            f"error: unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        sys.exit(1)
    if code == 130:
        print(
            "interrupted by SIGINT: stopped; temporary files removed, previous output kept", file=sys.stderr
        )
    sys.exit(code if isinstance(code, int) else 0)


def _terminate(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
    raise Terminated()


if __name__ == "__main__":
    main()
