"""Load an exported artifact on its runtime and run it, with nothing but numpy and that runtime.

This file must stay importable on its own (no edgecompress imports): remote runners copy it, with
measure.py, to a board that has only numpy and LiteRT (`ai_edge_litert` or the older
`tflite_runtime`) or OpenVINO installed. In the package it is `edgecompress.runtimes.sessions`.

    session = open_session("litert", "model.tflite", threads=2)
    logits = session.run(x)  # x: float32 array of session.input_shape
"""

from __future__ import annotations

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

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits for one input batch of `input_shape` (a copy, safe to keep)."""
        self._interpreter.set_tensor(
            self._input["index"], np.ascontiguousarray(x, dtype=self._input["dtype"])
        )
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output["index"]).copy()

    def tensor_dtypes(self) -> dict[str, str]:
        """Every tensor's name -> numpy dtype name (e.g. to check that fp16 weights are float16)."""
        return {str(d["name"]): np.dtype(d["dtype"]).name for d in self._interpreter.get_tensor_details()}


class OpenVINOSession:
    """An OpenVINO IR (.xml + .bin) compiled for one CPU stream of `threads` threads with the LATENCY hint.

    This is the configuration `benchmark_app -hint none -nthreads N -nstreams 1` measures, run the way it
    runs it (see `run`). The plugin picks the arithmetic precision (`INFERENCE_PRECISION_HINT`: bf16 on
    CPUs with AMX/AVX512-BF16, f32 on plain AVX2) unless `inference_precision` ("f32", "bf16", "f16") is
    given; `execution_precision` says which.
    """

    runtime = "openvino"

    def __init__(
        self, path: str | Path, *, threads: int, device: str = "CPU", inference_precision: str | None = None
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

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits for one input batch of `input_shape` (a copy, safe to keep).

        Copies `x` into the request's own input tensor and runs start_async() + wait(), as benchmark_app
        runs its requests (no new input tensor per call).
        """
        self._input[...] = x
        self._request.start_async()
        self._request.wait()
        return np.array(self._request.get_output_tensor(0).data, copy=True)


def open_session(
    runtime: str, path: str | Path, *, threads: int, inference_precision: str | None = None
) -> LiteRTSession | OpenVINOSession:
    """A session for `runtime` ("litert" or "openvino"); ValueError for any other name."""
    if runtime == "litert":
        if inference_precision not in (None, "f32"):
            raise ValueError(
                f"LiteRT runs float models in f32 here; inference_precision={inference_precision!r}"
            )
        return LiteRTSession(path, threads=threads)
    if runtime == "openvino":
        return OpenVINOSession(path, threads=threads, inference_precision=inference_precision)
    raise ValueError(f"unknown runtime '{runtime}'; valid: {', '.join(RUNTIMES)}")
