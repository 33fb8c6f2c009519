"""Load an exported artifact on its runtime and run it, with nothing but numpy and that runtime.

This file must stay importable on its own (no edgecompress imports): remote runners copy it, with
measure.py, to a board that has only numpy and LiteRT (`ai_edge_litert` or the older
`tflite_runtime`) or OpenVINO installed. In the package it is `edgecompress.runtimes.sessions`.

    session = open_session("litert", "model.tflite", threads=2)
    logits = session.run(x)  # x: float32 array of session.input_shape

`runtime_options` (a recipe's `export[].runtime_options`, keys in `RUNTIME_OPTIONS`) are compiled in with the
artifact. OpenVINO 2026.4 accepts sparse_weights_decompression_rate on any CPU and ignores it without AMX:
the session says so in `warnings`.

Per-op profiles (`profile_ops`) use each runtime's own profiler: OpenVINO's performance counters
(`PERF_COUNT`), and for LiteRT the CompiledModel profiler of `libLiteRt.so` (reached with ctypes: the
Python API of ai-edge-litert 2.3 exposes no per-op timing) or, where that library is absent, the
Interpreter's op inventory without any times.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

RUNTIMES = ("litert", "openvino")


def _package_version(*names: str) -> str:
    from importlib import metadata

    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def runtime_version(runtime: str) -> str | None:
    """The installed runtime's version as the sessions report it ('ai-edge-litert 2.3.0', 'openvino
    2026.4.1'), read from package metadata without importing it; None when it is not installed."""
    import importlib.util

    if runtime == "litert":
        if importlib.util.find_spec("ai_edge_litert") is not None:
            return "ai-edge-litert " + _package_version("ai-edge-litert")
        if importlib.util.find_spec("tflite_runtime") is not None:
            return "tflite-runtime " + _package_version("tflite-runtime", "tflite_runtime")
        return None
    if runtime == "openvino":
        if importlib.util.find_spec("openvino") is None:
            return None
        return "openvino " + _package_version("openvino")
    raise ValueError(f"unknown runtime '{runtime}'; valid: {', '.join(RUNTIMES)}")


def import_runtime(runtime: str) -> None:
    """Import `runtime`'s Python module (LiteRT: ai_edge_litert's interpreter, else tflite_runtime's); an
    ImportError that says what to install when it is missing."""
    import importlib

    candidates = {
        "litert": ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"),
        "openvino": ("openvino",),
    }
    if runtime not in candidates:
        raise ValueError(f"unknown runtime '{runtime}'; valid: {', '.join(RUNTIMES)}")
    for module in candidates[runtime]:
        try:
            importlib.import_module(module)
            return
        except ImportError:
            continue
    if runtime == "litert":
        raise ImportError("LiteRT is not installed: pip install ai-edge-litert (or tflite-runtime)")
    raise ImportError("OpenVINO is not installed: pip install openvino")


#: Runtime options a recipe may give an export (`export[].runtime_options`), per runtime: the recipe's key ->
#: the runtime's own property, set when the artifact is compiled.
RUNTIME_OPTIONS: dict[str, dict[str, str]] = {
    "litert": {},
    "openvino": {"sparse_weights_decompression_rate": "CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE"},
}
#: /proc/cpuinfo flags of oneDNN's `avx512_core_amx` ISA, which OpenVINO's sparse weight decompression needs.
AMX_FLAGS = ("amx_tile", "amx_int8", "amx_bf16")


def runtime_properties(runtime: str, options: dict[str, object] | None) -> dict[str, object]:
    """The runtime properties `options` (RUNTIME_OPTIONS keys) stand for, e.g. {"sparse_weights_decompression_rate":
    0.5} -> {"CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE": 0.5}; ValueError for an unknown key or a value out of range."""
    if runtime not in RUNTIME_OPTIONS:
        raise ValueError(f"unknown runtime '{runtime}'; valid: {', '.join(RUNTIME_OPTIONS)}")
    known = RUNTIME_OPTIONS[runtime]
    properties: dict[str, object] = {}
    for key, value in (options or {}).items():
        if key not in known:
            valid = ", ".join(known) or "none"
            raise ValueError(f"unknown {runtime} runtime option '{key}'; valid: {valid}")
        if key == "sparse_weights_decompression_rate":
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ValueError(
                    f"{key} must be a number from 0 to 1 (the least fraction of zero weights of a layer that "
                    f"is decompressed; 1 = off), got {value!r}"
                )
            value = float(value)
        properties[known[key]] = value
    return properties


class ArtifactUnreadable(ValueError):
    """The artifact file is corrupt, truncated or not what its name says: the message is one line naming the
    file and what is wrong (measure.py prints it and exits 3; the runners raise ArtifactError, exit 2)."""


def check_artifact(runtime: str, path: str | Path) -> None:
    """Cheap structural checks, before a runtime is given the file (a truncated OpenVINO .bin is read past
    its end; a file that is not a flatbuffer at all is better named than parsed): ArtifactUnreadable."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactUnreadable(f"{path}: no such file")
    size = path.stat().st_size
    if runtime == "litert":
        with path.open("rb") as f:
            head = f.read(8)
        if size < 8:
            raise ArtifactUnreadable(f"{path}: not a TFLite model: {size} bytes (empty or truncated)")
        if head[4:8] != b"TFL3":
            raise ArtifactUnreadable(
                f"{path}: not a TFLite model (no TFL3 file identifier at byte 4; {size:,} bytes)"
            )
        root = int.from_bytes(head[:4], "little")
        if root + 4 > size:
            raise ArtifactUnreadable(
                f"{path}: truncated TFLite model: its root table is at byte {root:,} of {size:,}"
            )
    elif runtime == "openvino":
        import xml.etree.ElementTree as ET

        try:
            net = ET.parse(path).getroot()
        except ET.ParseError as exc:
            raise ArtifactUnreadable(f"{path}: not an OpenVINO IR: the XML does not parse ({exc})") from None
        if net.tag != "net":
            raise ArtifactUnreadable(
                f"{path}: not an OpenVINO IR: its root element is <{net.tag}>, not <net>"
            )
        ends = [
            int(d.get("offset", 0)) + int(d.get("size", 0))
            for d in net.iter("data")
            if d.get("offset") is not None and d.get("size") is not None
        ]
        weights = path.with_suffix(".bin")
        if ends and not weights.is_file():
            raise ArtifactUnreadable(f"{path}: its weights file {weights.name} is missing")
        if ends and weights.stat().st_size < max(ends):
            raise ArtifactUnreadable(
                f"{weights}: truncated: {weights.stat().st_size:,} bytes, the model reads up to byte {max(ends):,}"
            )
    else:
        raise ValueError(f"unknown runtime '{runtime}'; valid: {', '.join(RUNTIMES)}")


class LiteRTSession:
    """A .tflite model on the LiteRT Interpreter (XNNPACK, the default CPU delegate) with `threads` threads.

    Uses `ai_edge_litert.interpreter`, or `tflite_runtime.interpreter` where only that is installed.
    """

    runtime = "litert"

    def __init__(self, path: str | Path, *, threads: int) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter

            self.runtime_version = "ai-edge-litert " + _package_version("ai-edge-litert")
        except ImportError:
            try:
                from tflite_runtime.interpreter import Interpreter
            except ImportError as exc:
                raise ImportError(
                    "LiteRT is not installed: pip install ai-edge-litert (or tflite-runtime)"
                ) from exc
            self.runtime_version = "tflite-runtime " + _package_version("tflite-runtime", "tflite_runtime")
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no such model file: {self.path}")
        self.threads = threads
        self._interpreter = Interpreter(model_path=str(self.path), num_threads=threads)
        self._interpreter.allocate_tensors()
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(
                f"{self.path}: expected one input and one output, got {len(inputs)} and {len(outputs)}"
            )
        self._input = inputs[0]
        self._output = outputs[0]
        self.input_name: str = str(self._input["name"])
        self.input_shape: list[int] = [int(d) for d in self._input["shape"]]
        self.input_dtype: str = np.dtype(self._input["dtype"]).name
        self.output_name: str = str(self._output["name"])
        self.output_shape: list[int] = [int(d) for d in self._output["shape"]]
        self.output_dtype: str = np.dtype(self._output["dtype"]).name
        #: Arithmetic precision the runtime computes in (XNNPACK runs float models in fp32 by default).
        self.execution_precision = "f32"
        #: LiteRT takes no runtime options (RUNTIME_OPTIONS["litert"]), so none can go unapplied.
        self.warnings: list[str] = []

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits for one input batch of `input_shape` (a copy, safe to keep)."""
        self._interpreter.set_tensor(
            self._input["index"], np.ascontiguousarray(x, dtype=self._input["dtype"])
        )
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output["index"]).copy()

    def invoke(self) -> None:
        """Run the model on the input already set (by `run`), copying nothing in or out."""
        self._interpreter.invoke()

    def tensor_dtypes(self) -> dict[str, str]:
        """Every tensor's name -> numpy dtype name (e.g. to check that fp16 weights are float16)."""
        return {str(d["name"]): np.dtype(d["dtype"]).name for d in self._interpreter.get_tensor_details()}

    def op_inventory(self) -> list[dict[str, object]]:
        """The model's ops in node order, and who runs each: see `litert_op_inventory`."""
        return litert_op_inventory(self._interpreter)


class OpenVINOSession:
    """An OpenVINO IR (.xml + .bin) compiled for one CPU stream of `threads` threads with the LATENCY hint.

    This is the configuration `benchmark_app -hint none -nthreads N -nstreams 1` measures, run the way it
    runs it (see `run`). The plugin picks the arithmetic precision (`INFERENCE_PRECISION_HINT`: bf16 on
    CPUs with AMX/AVX512-BF16, f32 on plain AVX2) unless `inference_precision` ("f32", "bf16", "f16") is
    given; `execution_precision` says which.

    `runtime_options` (RUNTIME_OPTIONS["openvino"]) are compiled in too. With sparse_weights_decompression_rate,
    `sparse_layers` names the layers whose weights the plugin keeps packed (exec type "..._sparse_..."), and
    `warnings` has one line when none is: the CPU lacks AMX, or no int8 FullyConnected layer qualifies.
    """

    runtime = "openvino"

    def __init__(
        self,
        path: str | Path,
        *,
        threads: int,
        device: str = "CPU",
        inference_precision: str | None = None,
        perf_count: bool = False,
        runtime_options: dict[str, object] | None = None,
    ) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise ImportError("OpenVINO is not installed: pip install openvino") from exc
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no such model file: {self.path}")
        self.threads = threads
        self.runtime_version = "openvino " + ov.get_version().split("-")[0]
        core = ov.Core()
        config: dict[str, object] = {
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "INFERENCE_NUM_THREADS": threads,
        }
        if inference_precision:
            config["INFERENCE_PRECISION_HINT"] = inference_precision
        if perf_count:
            # Per-node performance counters; a compiled model of its own, never the timed one.
            config["PERF_COUNT"] = True
        config.update(runtime_properties("openvino", runtime_options))
        self.runtime_options: dict[str, object] = dict(runtime_options or {})
        model = core.read_model(str(self.path))
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ValueError(
                f"{self.path}: expected one input and one output, got {len(model.inputs)} and {len(model.outputs)}"
            )
        self._compiled = core.compile_model(model, device, config)
        self._request = self._compiled.create_infer_request()
        #: The request's own input buffer; run() copies each input into it.
        self._input = self._request.get_input_tensor(0).data
        port = self._compiled.inputs[0]
        self.input_name = port.get_any_name()
        self.input_shape = [int(d) for d in port.get_shape()]
        self.input_dtype = np.dtype(port.get_element_type().to_dtype()).name
        out = self._compiled.outputs[0]
        self.output_name = out.get_any_name() if out.get_names() else ""
        self.output_shape = [int(d) for d in out.get_shape()]
        self.output_dtype = np.dtype(out.get_element_type().to_dtype()).name
        #: Arithmetic precision the plugin chose, e.g. "f32" or "bf16".
        self.execution_precision = self._compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        rate = self.runtime_options.get("sparse_weights_decompression_rate")
        #: Layers whose weights run packed by the sparse weight decompression (their exec type says "sparse").
        self.sparse_layers: list[str] = self._sparse_layers() if rate is not None else []
        #: One line per runtime option that took no effect here, and why.
        self.warnings: list[str] = []
        if rate is not None and float(rate) < 1 and not self.sparse_layers:
            self.warnings.append(_sparse_rate_warning(float(rate)))

    def _sparse_layers(self) -> list[str]:
        """Nodes of the compiled (runtime) model whose implementation is a sparse-weights kernel, e.g.
        brgemm_avx512_amx_sparse_I8: the plugin's own record that it packed their weights."""
        found = []
        for op in self._compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            kernel = str(info["primitiveType"].astype(str)) if "primitiveType" in info else ""
            if "sparse" in kernel.lower():
                found.append(op.get_friendly_name())
        return found

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits for one input batch of `input_shape` (a copy, safe to keep).

        Copies `x` into the request's own input tensor (no new input tensor per call) and runs the request
        synchronously. From Python, start_async() + wait() costs 10-15 µs more per call than infer() (a
        thread hand-off; measured on a 0.06 ms model: 0.072 vs 0.062 ms), which made 0.1 ms models read up to
        20% slower than benchmark_app, whose async loop runs in C++.
        """
        self._input[...] = x
        self._request.infer()
        return np.array(self._request.get_output_tensor(0).data, copy=True)

    def invoke(self) -> None:
        """Run the request on the input already set (by `run`), copying nothing in or out."""
        self._request.infer()

    def profiling_info(self) -> list[dict[str, object]]:
        """The last inference's performance counters (compile with perf_count=True), one dict per node:
        node_name, node_type, exec_type (e.g. brgconv_avx512_amx_i8, jit_avx2_FP32, ref), real_time_ms,
        status (EXECUTED, NOT_RUN, OPTIMIZED_OUT)."""
        return [
            {
                "node_name": info.node_name,
                "node_type": info.node_type,
                "exec_type": info.exec_type,
                "real_time_ms": info.real_time.total_seconds() * 1000,
                "status": str(info.status).rsplit(".", 1)[-1],
            }
            for info in self._request.profiling_info
        ]


def _sparse_rate_warning(rate: float) -> str:
    """Why sparse_weights_decompression_rate `rate` packed no layer, in one line (the CPU's flags read here:
    this file stays standalone, without probe.py)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    flags = {f for line in cpuinfo.splitlines() if line.lower().startswith("flags") for f in line.split()}
    missing = [f for f in AMX_FLAGS if cpuinfo and f not in flags]
    if missing:
        return (
            f"sparse_weights_decompression_rate {rate:g} has no effect: this CPU lacks AMX ({', '.join(missing)} "
            "not in /proc/cpuinfo), and OpenVINO decompresses sparse int8 FullyConnected weights on AMX CPUs only"
        )
    return (
        f"sparse_weights_decompression_rate {rate:g} packed no layer: OpenVINO packs int8 FullyConnected weights "
        f"whose two dimensions are multiples of 64 and at least {rate:g} of them zero, on AMX CPUs"
    )


def litert_op_inventory(interpreter) -> list[dict[str, object]]:
    """Every op of subgraph 0 of an allocated LiteRT/TFLite Interpreter, in node (execution) order.

    Each: index, type (TFLite builtin name, e.g. CONV_2D), executed_by ("XNNPACK" when the default CPU
    delegate took the node, else "builtin kernels": TFLite's own reference/optimized CPU kernels),
    input_dtypes (activations: inputs produced by another op or fed by the caller), weight_dtypes (constant
    inputs), output_dtypes, producers and consumers (indices of the neighbouring ops).

    A delegated node is found from the graph itself: the interpreter appends one DELEGATE node per
    partition, whose inputs are the partition's boundary; every original node reached walking back from
    that node's outputs without crossing the boundary ran inside the delegate. Uses the Interpreter's
    experimental `_get_ops_details()`; raises RuntimeError where the installed runtime lacks it.
    """
    if not hasattr(interpreter, "_get_ops_details"):
        raise RuntimeError("this LiteRT/TFLite runtime has no Interpreter._get_ops_details()")
    nodes = interpreter._get_ops_details()
    dtype_cache: dict[int, str] = {}

    def dtype(index: int) -> str:
        if index not in dtype_cache:
            dtype_cache[index] = np.dtype(interpreter._get_tensor_details(index, 0)["dtype"]).name
        return dtype_cache[index]

    graph_inputs = {int(d["index"]) for d in interpreter.get_input_details()}
    is_delegate = {int(n["index"]): "DELEGATE" in str(n["op_name"]).upper() for n in nodes}
    original = [n for n in nodes if not is_delegate[int(n["index"])]]
    producer = {int(t): int(n["index"]) for n in original for t in n["outputs"] if t != -1}
    consumers: dict[int, list[int]] = {}
    for n in original:
        for t in n["inputs"]:
            if t != -1:
                consumers.setdefault(int(t), []).append(int(n["index"]))
    delegated: set[int] = set()
    for n in nodes:
        if not is_delegate[int(n["index"])]:
            continue
        boundary = {int(t) for t in n["inputs"]}
        stack = [int(t) for t in n["outputs"]]
        while stack:
            node = producer.get(stack.pop())
            if node is None or node in delegated:
                continue
            delegated.add(node)
            details = next(o for o in original if int(o["index"]) == node)
            stack += [int(t) for t in details["inputs"] if t != -1 and int(t) not in boundary]
    inventory: list[dict[str, object]] = []
    for n in original:
        index = int(n["index"])
        inputs = [int(t) for t in n["inputs"] if t != -1]
        activations = [t for t in inputs if t in producer or t in graph_inputs]
        outputs = [int(t) for t in n["outputs"] if t != -1]
        inventory.append(
            {
                "index": index,
                "type": str(n["op_name"]),
                "executed_by": "XNNPACK" if index in delegated else "builtin kernels",
                "input_dtypes": [dtype(t) for t in activations],
                "weight_dtypes": [dtype(t) for t in inputs if t not in activations],
                "output_dtypes": [dtype(t) for t in outputs],
                "producers": sorted({producer[t] for t in activations if t in producer}),
                "consumers": sorted({c for t in outputs for c in consumers.get(t, [])}),
            }
        )
    return inventory


class _MemoryUsage(ctypes.Structure):
    _fields_ = [("a", ctypes.c_size_t), ("b", ctypes.c_size_t), ("c", ctypes.c_size_t)]


class _ProfiledEvent(ctypes.Structure):
    """litert/c/litert_profiler_event.h: ProfiledEventData."""

    _fields_ = [
        ("tag", ctypes.c_char_p),
        ("event_type", ctypes.c_int),
        ("start_timestamp_us", ctypes.c_uint64),
        ("elapsed_time_us", ctypes.c_uint64),
        ("begin_mem_usage", _MemoryUsage),
        ("end_mem_usage", _MemoryUsage),
        ("event_metadata1", ctypes.c_int64),
        ("event_metadata2", ctypes.c_int64),
        ("event_source", ctypes.c_int),
    ]


class LiteRTOpProfiler:
    """A .tflite on LiteRT's CompiledModel (CPU accelerator, XNNPACK) with the runtime's profiler on.

    ai-edge-litert 2.3's Python API exposes no profiler (neither `Interpreter` nor `CompiledModel`), so
    this drives the C API of the `libLiteRt.so` the wheel ships, through ctypes: runtime options
    "enable_profiling = true" (opaque options "runtime_options_string"), then
    `LiteRtCompiledModelGetProfiler` / `LiteRtGetProfilerEvents`. Events are whole microseconds.
    The CPU thread count is the CompiledModel default (the C API sets it through a struct this does not
    build), so `threads` is None. Raises RuntimeError (or OSError) where the library or a call is missing.
    """

    threads = None

    def __init__(self, path: str | Path) -> None:
        try:
            import ai_edge_litert
        except ImportError as exc:
            raise RuntimeError("ai-edge-litert (with libLiteRt.so) is not installed") from exc
        lib_path = Path(ai_edge_litert.__file__).resolve().parent / "libLiteRt.so"
        if not lib_path.is_file():
            raise RuntimeError(f"no {lib_path.name} in {lib_path.parent}")
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no such model file: {self.path}")
        self.runtime_version = "ai-edge-litert " + _package_version("ai-edge-litert")
        lib = ctypes.CDLL(str(lib_path))
        libc = ctypes.CDLL(None)
        vp, size_t = ctypes.c_void_p, ctypes.c_size_t
        signatures = {
            "LiteRtCreateEnvironment": [ctypes.c_int, vp, ctypes.POINTER(vp)],
            "LiteRtCreateModelFromFile": [vp, ctypes.c_char_p, ctypes.POINTER(vp)],
            "LiteRtCreateOptions": [ctypes.POINTER(vp)],
            "LiteRtSetOptionsHardwareAccelerators": [vp, ctypes.c_int],
            "LiteRtCreateOpaqueOptions": [ctypes.c_char_p, vp, vp, ctypes.POINTER(vp)],
            "LiteRtAddOpaqueOptions": [vp, vp],
            "LiteRtCreateCompiledModel": [vp, vp, vp, ctypes.POINTER(vp)],
            "LiteRtCompiledModelGetProfiler": [vp, ctypes.POINTER(vp)],
            "LiteRtGetModelSignature": [vp, size_t, ctypes.POINTER(vp)],
            "LiteRtGetSignatureInputTensorByIndex": [vp, size_t, ctypes.POINTER(vp)],
            "LiteRtGetSignatureOutputTensorByIndex": [vp, size_t, ctypes.POINTER(vp)],
            "LiteRtGetRankedTensorType": [vp, vp],
            "LiteRtGetCompiledModelInputBufferRequirements": [vp, size_t, size_t, ctypes.POINTER(vp)],
            "LiteRtGetCompiledModelOutputBufferRequirements": [vp, size_t, size_t, ctypes.POINTER(vp)],
            "LiteRtGetTensorBufferRequirementsBufferSize": [vp, ctypes.POINTER(size_t)],
            "LiteRtCreateTensorBufferFromHostMemory": [vp, vp, size_t, vp, ctypes.POINTER(vp)],
            "LiteRtRunCompiledModel": [vp, size_t, size_t, vp, size_t, vp],
            "LiteRtStartProfiler": [vp],
            "LiteRtResetProfiler": [vp],
            "LiteRtGetNumProfilerEvents": [vp, ctypes.POINTER(ctypes.c_int)],
            "LiteRtGetProfilerEvents": [vp, ctypes.c_int, vp],
        }
        for name, argtypes in signatures.items():
            function = getattr(lib, name)  # AttributeError -> caught by the caller as a missing API
            function.argtypes = argtypes
            function.restype = ctypes.c_int
        libc.strdup.restype = vp
        libc.strdup.argtypes = [ctypes.c_char_p]
        libc.aligned_alloc.restype = vp
        libc.aligned_alloc.argtypes = [size_t, size_t]
        self._lib, self._libc = lib, libc
        free = ctypes.cast(libc.free, vp)

        def check(status: int, what: str) -> None:
            if status != 0:
                raise RuntimeError(f"LiteRT C API: {what} failed (LiteRtStatus {status})")

        self._check = check
        env, model, options, opaque, compiled, profiler, signature = (vp() for _ in range(7))
        check(lib.LiteRtCreateEnvironment(0, None, ctypes.byref(env)), "LiteRtCreateEnvironment")
        check(
            lib.LiteRtCreateModelFromFile(env, str(self.path).encode(), ctypes.byref(model)),
            "LiteRtCreateModelFromFile",
        )
        check(lib.LiteRtCreateOptions(ctypes.byref(options)), "LiteRtCreateOptions")
        check(lib.LiteRtSetOptionsHardwareAccelerators(options, 1), "select the CPU accelerator")
        payload = libc.strdup(b"enable_profiling = true\n")  # freed by LiteRT with the options
        check(
            lib.LiteRtCreateOpaqueOptions(b"runtime_options_string", payload, free, ctypes.byref(opaque)),
            "LiteRtCreateOpaqueOptions",
        )
        check(lib.LiteRtAddOpaqueOptions(options, opaque), "LiteRtAddOpaqueOptions")
        check(lib.LiteRtCreateCompiledModel(env, model, options, ctypes.byref(compiled)), "compile")
        check(lib.LiteRtCompiledModelGetProfiler(compiled, ctypes.byref(profiler)), "get the profiler")
        if not profiler:
            raise RuntimeError("LiteRT returned no profiler although profiling was enabled")
        check(lib.LiteRtGetModelSignature(model, 0, ctypes.byref(signature)), "LiteRtGetModelSignature")
        self._env, self._model, self._options, self._compiled = env, model, options, compiled
        self._profiler, self._signature, self._free = profiler, signature, free
        self._keep: list[object] = []
        self._in, self._in_mem, self.input_bytes = self._buffer("Input")
        self._out, _, self.output_bytes = self._buffer("Output")
        self._inputs = (vp * 1)(self._in)
        self._outputs = (vp * 1)(self._out)
        check(lib.LiteRtStartProfiler(profiler), "LiteRtStartProfiler")

    def _buffer(self, kind: str) -> tuple[ctypes.c_void_p, int, int]:
        lib, vp = self._lib, ctypes.c_void_p
        tensor, requirements, buffer = vp(), vp(), vp()
        size = ctypes.c_size_t()
        get_tensor = getattr(lib, f"LiteRtGetSignature{kind}TensorByIndex")
        self._check(get_tensor(self._signature, 0, ctypes.byref(tensor)), f"{kind.lower()} tensor")
        # The tensor type is only handed back to LiteRT, so its struct layout is never read here.
        tensor_type = ctypes.create_string_buffer(1024)
        self._keep.append(tensor_type)
        self._check(lib.LiteRtGetRankedTensorType(tensor, tensor_type), f"{kind.lower()} tensor type")
        get_requirements = getattr(lib, f"LiteRtGetCompiledModel{kind}BufferRequirements")
        self._check(get_requirements(self._compiled, 0, 0, ctypes.byref(requirements)), "requirements")
        self._check(
            lib.LiteRtGetTensorBufferRequirementsBufferSize(requirements, ctypes.byref(size)), "buffer size"
        )
        padded = (size.value + 63) // 64 * 64
        memory = self._libc.aligned_alloc(64, padded)
        if not memory:
            raise MemoryError("aligned_alloc failed")
        ctypes.memset(memory, 0, padded)
        self._check(
            lib.LiteRtCreateTensorBufferFromHostMemory(
                tensor_type, memory, size.value, self._free, ctypes.byref(buffer)
            ),
            "LiteRtCreateTensorBufferFromHostMemory",
        )
        return buffer, memory, size.value

    def run(self, x: np.ndarray) -> None:
        """One inference on `x` (its bytes must be exactly the model input's)."""
        data = np.ascontiguousarray(x)
        if data.nbytes != self.input_bytes:
            raise ValueError(f"input has {data.nbytes} bytes, the model takes {self.input_bytes}")
        ctypes.memmove(self._in_mem, data.ctypes.data, data.nbytes)
        self._check(
            self._lib.LiteRtRunCompiledModel(self._compiled, 0, 1, self._inputs, 1, self._outputs),
            "LiteRtRunCompiledModel",
        )

    def take_events(self) -> list[dict[str, object]]:
        """The profiler's events since the last call (tag, event_type, elapsed_us, metadata1), then reset."""
        count = ctypes.c_int()
        self._check(self._lib.LiteRtGetNumProfilerEvents(self._profiler, ctypes.byref(count)), "event count")
        events = (_ProfiledEvent * max(count.value, 1))()
        if count.value:
            self._check(self._lib.LiteRtGetProfilerEvents(self._profiler, count.value, events), "events")
        self._check(self._lib.LiteRtResetProfiler(self._profiler), "LiteRtResetProfiler")
        # A reset also stops the profiler (measured with ai-edge-litert 2.3): start it again.
        self._check(self._lib.LiteRtStartProfiler(self._profiler), "LiteRtStartProfiler")
        return [
            {
                "tag": (e.tag or b"").decode("utf-8", "replace"),
                "event_type": int(e.event_type),
                "elapsed_us": int(e.elapsed_time_us),
                "metadata1": int(e.event_metadata1),
            }
            for e in events[: count.value]
        ]


def open_session(
    runtime: str,
    path: str | Path,
    *,
    threads: int,
    inference_precision: str | None = None,
    perf_count: bool = False,
    runtime_options: dict[str, object] | None = None,
) -> LiteRTSession | OpenVINOSession:
    """A session for `runtime` ("litert" or "openvino"); ValueError for any other name or an unknown runtime
    option, ArtifactUnreadable when the file is corrupt or the runtime cannot load it.

    `perf_count` (OpenVINO only) turns on the plugin's per-node performance counters; `runtime_options`
    (RUNTIME_OPTIONS[runtime]) are compiled in."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime '{runtime}'; valid: {', '.join(RUNTIMES)}")
    if runtime == "litert" and inference_precision not in (None, "f32"):
        raise ValueError(f"LiteRT runs float models in f32 here; inference_precision={inference_precision!r}")
    runtime_properties(runtime, runtime_options)  # a bad option is the caller's error, not the artifact's
    check_artifact(runtime, path)
    try:
        if runtime == "litert":
            return LiteRTSession(path, threads=threads)
        return OpenVINOSession(
            path,
            threads=threads,
            inference_precision=inference_precision,
            perf_count=perf_count,
            runtime_options=runtime_options,
        )
    except (ImportError, MemoryError):
        raise
    except Exception as exc:  # the runtime's own loader refused the file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1].strip()
        name = "LiteRT" if runtime == "litert" else "OpenVINO"
        raise ArtifactUnreadable(f"{path}: {name} cannot load it: {first}") from exc
