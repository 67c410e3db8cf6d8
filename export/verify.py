"""Parity of exported graphs against their torch modules (ONNX Runtime, CPU, fp32)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from ..runtime.kv_cache import cache_names
from .graphs import GraphSpec, Models


class ParityError(AssertionError):
    """An exported graph disagrees with its torch module beyond the stated tolerance."""


@dataclass(frozen=True)
class Parity:
    graph: str
    atol: float
    max_abs_diff: float  # worst output over all cases
    cases: list[dict]  # per case: input shapes and max |diff| per output

    def to_dict(self) -> dict:
        return asdict(self)


def cpu_session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _max_diff(expected: np.ndarray, got: np.ndarray) -> float:
    """max |expected - got|; for integer outputs (codes) any mismatch counts as infinite."""
    if not expected.size:
        return 0.0
    if np.issubdtype(expected.dtype, np.integer):
        return 0.0 if np.array_equal(expected, got) else float("inf")
    return float(np.max(np.abs(expected - got)))


def check_parity(spec: GraphSpec, models: Models, path: Path,
                 session: ort.InferenceSession | None = None) -> Parity:
    """Run every parity case of `spec` through torch and ORT; raise ParityError past `spec.atol`."""
    sess = session or cpu_session(path)
    module = spec.wrapper(models).eval()
    cases, worst = [], 0.0
    # the record keeps one KV-cache input's shape: they all have the same one
    pasts = [n for n in cache_names(spec.kv_cache["past"], len(spec.inputs)) if n in spec.inputs] if spec.kv_cache else []
    later_pasts = set(pasts[1:])
    for inputs in spec.cases(models):
        with torch.no_grad():
            expected = module(*inputs)
        expected = expected if isinstance(expected, (tuple, list)) else (expected,)
        feeds = {name: t.numpy() for name, t in zip(spec.inputs, inputs)}
        got = sess.run(list(spec.outputs), feeds)
        diffs = {}
        for name, e, g in zip(spec.outputs, expected, got):
            e = e.numpy()
            if e.shape != g.shape:
                raise ParityError(f"{spec.name}: output {name} has shape {g.shape}, torch gives {e.shape}")
            diffs[name] = _max_diff(e, g)
        case_worst = max(diffs.values())
        worst = max(worst, case_worst)
        shapes = {n: list(t.shape) for n, t in zip(spec.inputs, inputs) if n not in later_pasts}
        if "length" in shapes:  # a scalar input: record its value, it sets the output length
            shapes["length"] = int(inputs[list(spec.inputs).index("length")])
        cases.append({"shapes": shapes, "max_abs_diff": diffs})
        if case_worst > spec.atol:
            raise ParityError(
                f"{spec.name}: max |onnx - torch| = {case_worst:.3g} > atol {spec.atol} "
                f"at input shapes {cases[-1]['shapes']} ({diffs})"
            )
    return Parity(graph=spec.name, atol=spec.atol, max_abs_diff=worst, cases=cases)
