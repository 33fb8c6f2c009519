"""Per-op profiles of an artifact: the runtimes' own profiler events and counters aggregated per op.

Standalone like measure.py and sessions.py (numpy only, no edgecompress import): measure.py loads it from
its own directory, so the three files can be copied to a board and run there.
"""

from __future__ import annotations

import re

import numpy as np

#: tflite::Profiler::EventType values (litert/c/litert_profiler_event.h) the LiteRT op profile reads.
LITERT_DEFAULT = 1
LITERT_OPERATOR = 2  # a TFLite node run by a builtin kernel; metadata1 = its node index
LITERT_DELEGATE_OPERATOR = 4  # an op inside a delegate; metadata1 = the delegate's own op index
LITERT_DELEGATE_PROFILED_OPERATOR = 8  # the same, reported in the operator-wise section

#: XNNPACK's datatype codes, as they appear in its operator names ("Convolution (NHWC, QC8) IGEMM").
XNNPACK_PRECISIONS = {
    "F32": "f32",
    "F16": "f16",
    "BF16": "bf16",
    "QS8": "int8",
    "QU8": "int8",
    "QC8": "int8",
    "QD8": "int8-dynamic",  # int8 activations quantized at run time, float interface
    "QP8": "int8-dynamic",
    "X8": "8-bit",  # data movement (transpose, copy) on 8-bit elements
    "X16": "16-bit",
    "X32": "32-bit",
}
#: OpenVINO exec_type suffixes ("brgconv_avx512_amx_i8", "jit_avx2_FP32", "unknown_f32") -> precision.
OPENVINO_PRECISIONS = {
    "i8": "int8",
    "u8": "int8",
    "f32": "f32",
    "fp32": "f32",
    "bf16": "bf16",
    "f16": "f16",
    "fp16": "f16",
    "i32": "i32",
    "i64": "i64",
}
NUMPY_PRECISIONS = {"int8": "int8", "uint8": "int8", "float32": "f32", "float16": "f16", "int32": "i32"}


def precision_of(exec_type: str) -> str | None:
    """The arithmetic precision an exec type names: OpenVINO's kernel names or XNNPACK's operator names;
    None when it names none (e.g. OpenVINO's "undef", a builtin LiteRT kernel)."""
    codes = re.search(r"\(([^)]*)\)", exec_type)
    if codes:
        for code in (c.strip().upper() for c in codes.group(1).split(",")):
            if code in XNNPACK_PRECISIONS:
                return XNNPACK_PRECISIONS[code]
            if code.endswith("W") and code[:-1] in XNNPACK_PRECISIONS:
                return XNNPACK_PRECISIONS[code[:-1]]
        return None
    last = exec_type.rsplit("_", 1)[-1].lower()
    return OPENVINO_PRECISIONS.get(last)


def _finish(ops: list[dict[str, object]], runs: int) -> tuple[list[dict[str, object]], float]:
    """Per-inference times and shares from summed times, sorted slowest first."""
    for op in ops:
        op["time_ms"] = float(op["time_ms"]) / runs
        op["calls"] = float(op["calls"]) / runs
    total = sum(float(op["time_ms"]) for op in ops)
    for op in ops:
        op["share"] = float(op["time_ms"]) / total if total > 0 else 0.0
    ops.sort(key=lambda op: -float(op["time_ms"]))
    return ops, total


def aggregate_openvino(runs: list[list[dict[str, object]]]) -> dict[str, object]:
    """OpenVINO performance counters of several inferences (each a list of
    `OpenVINOSession.profiling_info()` dicts) -> per-node mean real time per inference, slowest first."""
    if not runs:
        raise ValueError("no profiled inferences")
    nodes: dict[str, dict[str, object]] = {}
    for info in runs:
        for node in info:
            op = nodes.setdefault(
                str(node["node_name"]),
                {
                    "name": str(node["node_name"]),
                    "type": str(node["node_type"]),
                    "exec_type": str(node["exec_type"]),
                    "precision": None,
                    "time_ms": 0.0,
                    "calls": 0.0,
                    "status": str(node["status"]),
                },
            )
            if node["status"] == "EXECUTED":
                op["time_ms"] = float(op["time_ms"]) + float(node["real_time_ms"])
                op["calls"] = float(op["calls"]) + 1
                op["status"] = "EXECUTED"
                op["exec_type"] = str(node["exec_type"])
    for op in nodes.values():
        op["precision"] = precision_of(str(op["exec_type"]))
    ops, total = _finish(list(nodes.values()), len(runs))
    return {"runs": len(runs), "total_ms": total, "invoke_ms": None, "ops": ops}


def aggregate_litert(
    runs: list[list[dict[str, object]]], inventory: list[dict[str, object]] | None = None
) -> dict[str, object]:
    """LiteRT profiler events of several inferences (each a list of `LiteRTOpProfiler.take_events()`
    dicts) -> per-op mean time per inference, slowest first.

    Ops are XNNPACK's operators (delegate events; precision from the datatype codes in their names) and
    TFLite nodes run by builtin kernels (operator events; metadata1 is the node index, and `inventory`
    supplies its type and dtypes). A delegate's own node event, which would count its ops twice, is left
    out. "invoke_ms" is the profiler's whole-Invoke event, for comparison with the sum of the ops.
    """
    if not runs:
        raise ValueError("no profiled inferences")
    by_index = {int(op["index"]): op for op in inventory or []}
    ops: dict[tuple[int, int, str], dict[str, object]] = {}
    invokes: list[float] = []
    for events in runs:
        delegated = any(
            e["event_type"] in (LITERT_DELEGATE_OPERATOR, LITERT_DELEGATE_PROFILED_OPERATOR) for e in events
        )
        invoke = [e for e in events if e["event_type"] == LITERT_DEFAULT and e["tag"] == "Invoke"]
        if invoke:
            invokes.append(float(invoke[0]["elapsed_us"]) / 1000)
        for e in events:
            kind, tag, index = int(e["event_type"]), str(e["tag"]), int(e["metadata1"])
            if kind == LITERT_OPERATOR:
                node = by_index.get(index)
                if delegated and ("delegate" in tag.lower() or (inventory is not None and node is None)):
                    continue
                key = (LITERT_OPERATOR, index, tag)
                dtypes = list(node["output_dtypes"]) if node else []
                entry = {
                    "name": f"#{index} {node['type'] if node else tag}",
                    "type": str(node["type"]) if node else tag,
                    "exec_type": "builtin kernels",
                    "precision": NUMPY_PRECISIONS.get(dtypes[0], dtypes[0]) if dtypes else None,
                    "input_dtypes": list(node["input_dtypes"]) if node else [],
                    "output_dtypes": dtypes,
                }
            elif kind in (LITERT_DELEGATE_OPERATOR, LITERT_DELEGATE_PROFILED_OPERATOR):
                key = (LITERT_DELEGATE_OPERATOR, index, tag)
                op_type, _, detail = tag.partition(" (")
                entry = {
                    "name": f"xnnpack#{index} {op_type}",
                    "type": op_type,
                    "exec_type": f"XNNPACK ({detail}" if detail else "XNNPACK",
                    "precision": precision_of(tag),
                }
            else:
                continue
            op = ops.setdefault(key, {**entry, "time_ms": 0.0, "calls": 0.0, "status": "EXECUTED"})
            op["time_ms"] = float(op["time_ms"]) + float(e["elapsed_us"]) / 1000
            op["calls"] = float(op["calls"]) + 1
    result, total = _finish(list(ops.values()), len(runs))
    return {
        "runs": len(runs),
        "total_ms": total,
        "invoke_ms": float(np.mean(invokes)) if invokes else None,
        "ops": result,
    }


def inventory_profile(inventory: list[dict[str, object]], reason: str) -> dict[str, object]:
    """The op profile of a LiteRT model whose per-op timing is unreachable: its ops, no times."""
    ops = []
    for op in inventory:
        dtypes = list(op["output_dtypes"])
        ops.append(
            {
                "name": f"#{op['index']} {op['type']}",
                "type": op["type"],
                "exec_type": op["executed_by"],
                "precision": NUMPY_PRECISIONS.get(dtypes[0], dtypes[0]) if dtypes else None,
                "time_ms": None,
                "share": None,
                "calls": None,
                "status": "INVENTORY",
                "input_dtypes": list(op["input_dtypes"]),
                "output_dtypes": dtypes,
            }
        )
    return {
        "source": "LiteRT Interpreter op inventory",
        "timed": False,
        "runs": 0,
        "threads": None,
        "total_ms": None,
        "invoke_ms": None,
        "ops": ops,
        "note": f"op inventory WITHOUT timings (no per-op timing reachable: {reason})",
    }
