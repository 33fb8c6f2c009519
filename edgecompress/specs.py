"""Data files that describe the world: export targets (targets/*.yaml) and devices (devices/*.yaml).

A name is looked up in `<recipe dir>/<kind>/`, `./<kind>/`, then the copy shipped beside the package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgecompress.errors import RecipeError
from edgecompress.registry import did_you_mean

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def spec_dirs(kind: str, base_dir: Path | None = None) -> list[Path]:
    dirs = [Path.cwd() / kind, PROJECT_ROOT / kind]
    if base_dir is not None:
        dirs = [Path(base_dir) / kind, Path(base_dir).parent / kind, *dirs]
    seen: list[Path] = []
    for d in dirs:
        if d.resolve() not in [s.resolve() for s in seen]:
            seen.append(d)
    return seen


def find_spec_file(kind: str, name: str, *, base_dir: Path | None = None) -> Path:
    """The YAML file for `name` in the first `kind/` folder that has it; RecipeError listing the known ones."""
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        return Path(name)
    known: set[str] = set()
    for d in spec_dirs(kind, base_dir):
        candidate = d / f"{name}.yaml"
        if candidate.is_file():
            return candidate
        known.update(p.stem for p in d.glob("*.yaml"))
    raise RecipeError(
        f"no {kind[:-1]} named '{name}'{did_you_mean(name, known)}; known: {', '.join(sorted(known)) or 'none'} "
        f"(add {kind}/{name}.yaml)"
    )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CPUSpec(_Strict):
    model: str = Field(description="CPU model name as the vendor gives it, or 'detect' for this machine.")
    arch: Literal["x86_64", "aarch64", "armv7l", "detect"] = Field(
        description="Instruction set architecture."
    )
    cores: int | Literal["detect"] = Field(description="Cores available to inference.")
    isa: list[str] = Field(
        default_factory=list, description="SIMD/ISA features, e.g. avx2, avx512_vnni, neon, dotprod."
    )
    int8_dot_product: bool | Literal["detect"] = Field(
        default="detect",
        description="Whether the CPU has int8 dot-product instructions (VNNI, ARM dotprod) that make int8 faster.",
    )


class PowerModel(_Strict):
    idle_watts: float = Field(gt=0, description="Package power at idle.")
    active_watts_per_core: float = Field(gt=0, description="Extra power per busy core, for estimated energy.")
    source: str = Field(description="Where these numbers come from (datasheet, measurement, ...).")


class Connection(_Strict):
    runner: Literal["local", "ssh", "adb"] = Field(
        default="local", description="How artifacts reach the device."
    )
    serial: str | None = Field(default=None, description="adb: the device's serial (`adb devices`).")
    affinity: str | None = Field(
        default=None,
        pattern=r"^(0x)?[0-9a-fA-F]+$",
        description="adb: hex CPU mask the measurement is pinned to on the device (taskset), e.g. f0 for the "
        "big cores of a 4+4 phone.",
    )
    host: str | None = Field(
        default=None,
        description="ssh: an alias of ~/.ssh/config or user@host[:port]. Keys and ssh-agent only; never a password.",
    )
    known_hosts: Literal["strict", "accept-new"] = Field(
        default="strict",
        description="ssh: the host key must be in ~/.ssh/known_hosts (strict), or an unknown one is recorded "
        "on first use (accept-new); a changed key is always refused.",
    )
    mode: Literal["script", "native"] = Field(
        default="script",
        description="script: measure.py run by the device's Python (numpy and the runtime); native: the "
        "runtime's own benchmark tool (benchmark_model / litert-benchmark, benchmark_app) on the device, for "
        "devices without Python: no op profile, no peak memory from benchmark_app, energy estimated only, "
        "no parity on the device.",
    )
    benchmark_model: str | None = Field(
        default=None,
        description="native: LiteRT's tool on the device: the C++ benchmark_model (default: benchmark_model "
        "on the PATH; adb: /data/local/tmp/benchmark_model) or ai-edge-litert's litert-benchmark.",
    )
    benchmark_app: str | None = Field(
        default=None, description="native: OpenVINO's benchmark_app on the device (default: on the PATH)."
    )
    python: str = Field(default="python3", description="Python on the device that runs the profiling script.")
    workdir: str | None = Field(
        default=None,
        description="Directory on the device for the temporary files (default: its $TMPDIR or /tmp).",
    )
    connect_timeout: float = Field(
        default=15.0, gt=0, description="Seconds to reach and log in to the device."
    )
    timeout: float = Field(
        default=3600.0, gt=0, description="Seconds one profiling run may take on the device."
    )

    @model_validator(mode="after")
    def _needs_host(self) -> Connection:
        if self.runner == "ssh" and not self.host:
            raise ValueError("runner ssh needs host: an alias of ~/.ssh/config or user@host[:port]")
        if self.runner == "adb" and not self.serial:
            raise ValueError("runner adb needs serial: the device's serial as `adb devices` lists it")
        if self.host and self.runner == "ssh":
            _, _, address = self.host.rpartition("@")
            port = address.rsplit("]:", 1)[1] if address.startswith("[") and "]:" in address else None
            if port is None and address.count(":") == 1:
                port = address.split(":")[1]
            if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
                raise ValueError(f"host '{self.host}': the port must be a number from 1 to 65535")
        return self


class EnergySource(_Strict):
    """Where a device's energy is read (runtimes/energy.py): on the device, during its timed windows."""

    source: Literal["rapl", "ina3221", "android-battery", "rpi5-pmic", "meter", "perf"] = Field(
        description="rapl: powercap counters (x86); ina3221: Jetson/INA2xx hwmon rails; android-battery: "
        "battery current x voltage (unplugged); rpi5-pmic: vcgencmd pmic_read_adc; meter: a command printing watts; "
        "perf: perf stat's power events (the RAPL PMU)."
    )
    command: str | None = Field(
        default=None,
        description="meter: the command that prints watts (INA219/INA226 reader, USB meter); rpi5-pmic: "
        "default `vcgencmd pmic_read_adc`. Runs on the device.",
    )
    sysfs_root: str = Field(default="/sys", description="Where sysfs is (tests and chroots).")

    @model_validator(mode="after")
    def _meter_command(self) -> EnergySource:
        if self.source == "meter" and not self.command:
            raise ValueError("source meter needs command: the command on the device that prints watts")
        return self


class DeviceProfile(_Strict):
    """A device artifacts are profiled on. See devices/desktop.yaml."""

    name: str
    description: str = Field(description="One line a person reads in the report.")
    cpu: CPUSpec
    memory_mb: int | Literal["detect"] = Field(description="RAM in MiB.")
    threads: int = Field(default=2, gt=0, description="Default inference threads on this device.")
    runtimes: list[Literal["litert", "openvino"]] = Field(description="Runtimes installed on the device.")
    connection: Connection = Field(default_factory=Connection)
    power: PowerModel | None = Field(
        default=None, description="Power model for estimated energy per inference."
    )
    energy: EnergySource | None = Field(
        default=None, description="Where energy is measured when profile.energy is on (else estimated)."
    )
    probed: dict[str, Any] | None = Field(
        default=None,
        description="What `edgecompress devices probe` read on the device, and when (OS, kernel, Python, "
        "runtime versions, governor, thermal zones, energy sources).",
    )
    channel_multiples: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="Channel multiple per runtime and precision, e.g. {litert: {int8: 16, fp32: 32}}: what "
        "round_to: auto rounds widths up to when the device cannot be measured. Default: from the ISA "
        "(the kernels' tile widths).",
    )

    def resolved_cpu(self) -> tuple[str, list[str]]:
        """(arch, ISA flags) of the device: the profile's; a local device's 'detect' arch or empty ISA list
        read from this machine. A remote device's stay as given ('detect', []): this machine is not it."""
        arch, isa = self.cpu.arch, list(self.cpu.isa)
        if self.connection.runner == "local" and (arch == "detect" or not isa):
            import platform

            from edgecompress.runtimes.probe import cpu_info

            isa = isa or cpu_info()[1]
            arch = platform.machine() if arch == "detect" else arch
        return arch, isa

    def channel_multiple(self, runtime: str, precision: str) -> int:
        """The channel multiple for `runtime` at `precision`: the profile's, else the default for its ISA
        (`resolved_cpu`: a local 'detect' profile reads this machine's)."""
        given = self.channel_multiples.get(runtime, {}).get(precision)
        if given:
            return given
        from edgecompress.latency.staircase import default_channel_multiple

        arch, isa = self.resolved_cpu()
        return default_channel_multiple(runtime, precision, isa, arch)


def load_device(name: str, *, base_dir: Path | None = None) -> DeviceProfile:
    path = find_spec_file("devices", name, base_dir=base_dir)
    try:
        data = yaml.safe_load(path.read_text()) or {}
        connection = data.get("connection") if isinstance(data, dict) else None
        if isinstance(connection, dict) and {"password", "passphrase"} & set(connection):
            raise RecipeError(
                f"{path}: connection: no password or passphrase in a device file: log in with a key "
                "(ssh-agent, or IdentityFile in ~/.ssh/config)"
            )
        return DeviceProfile.model_validate({"name": name, **data})
    except (yaml.YAMLError, ValidationError) as exc:
        first = exc.errors()[0] if isinstance(exc, ValidationError) else {"loc": (), "msg": str(exc)}
        key = ".".join(map(str, first["loc"]))
        raise RecipeError(f"{path}: {key}: {first['msg']}") from None
