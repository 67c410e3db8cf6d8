"""ONNX Runtime sessions: provider choice and a small `Graph` wrapper that checks its feeds."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .errors import BundleError, InputError
from .manifest import GraphEntry

_LOG = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda")

_FLOATS = {"tensor(float)": np.dtype(np.float32), "tensor(float16)": np.dtype(np.float16)}
_DTYPES = {**_FLOATS, "tensor(int64)": np.dtype(np.int64), "tensor(int32)": np.dtype(np.int32)}


def providers_for(device: str) -> list[str]:
    """Execution providers for `device`; "cuda" needs onnxruntime-gpu and keeps CPU as the fallback."""
    if device not in DEVICES:
        raise InputError(f"device {device!r} is not supported", f"use one of {', '.join(DEVICES)}")
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise InputError(
            "device 'cuda' asked for, but this ONNX Runtime has no CUDAExecutionProvider",
            "install `indextts2-onnx[gpu]` (onnxruntime-gpu) instead of the CPU build, with CUDA 13 libraries",
        )
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def session_options(threads: int | None) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return opts


@dataclass
class Graph:
    """One loaded graph with the I/O names the manifest declares, and its manifest entry (None for a graph
    opened without a manifest), so that callers can find its inputs and outputs by role."""

    name: str
    session: ort.InferenceSession
    inputs: list[str]
    outputs: list[str]
    entry: GraphEntry | None = None

    def __post_init__(self):
        self.input_types = {i.name: i.type for i in self.session.get_inputs()}  # "tensor(float16)", ...

    @staticmethod
    def open(bundle: Path, name: str, entry: GraphEntry, providers: list[str],
             threads: int | None = None) -> "Graph":
        path = bundle / entry.file
        try:
            sess = ort.InferenceSession(str(path), session_options(threads), providers=providers)
        except Exception as e:  # ORT raises its own exception types for corrupt or unreadable graphs
            raise BundleError(f"{path}: ONNX Runtime cannot load it ({e})", "re-export the bundle") from e
        names_in = [i.name for i in sess.get_inputs()]
        names_out = [o.name for o in sess.get_outputs()]
        if names_in != entry.inputs or names_out != entry.outputs:
            raise BundleError(f"{path}: graph I/O does not match the manifest", "re-export the bundle")
        _LOG.debug("%s on %s", name, sess.get_providers())
        return Graph(name, sess, names_in, names_out, entry)

    def input_dtype(self, name: str) -> np.dtype:
        """numpy dtype the graph declares for input `name` (float16 in fp16 graphs that take fp16)."""
        return _DTYPES.get(self.input_types[name], np.dtype(np.float32))

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run with feeds for exactly the declared inputs; returns outputs in declared order.

        Float feeds are cast to the graph's declared float type, so callers need not know whether a
        graph was exported fp32 or fp16."""
        if set(feeds) != set(self.inputs):
            raise ValueError(f"{self.name}: feeds {sorted(feeds)} do not match inputs {self.inputs}")
        feeds = dict(feeds)
        for name, value in feeds.items():
            want = _FLOATS.get(self.input_types[name])
            if want is not None and value.dtype != want and value.dtype in _FLOATS.values():
                feeds[name] = value.astype(want)
        return self.session.run(self.outputs, feeds)

    def binding(self) -> ort.IOBinding:
        """A fresh IOBinding of this graph's session (for inputs and outputs bound in place)."""
        return self.session.io_binding()

    def run_bound(self, binding: ort.IOBinding) -> None:
        """Run with a binding from `binding()`: outputs land where they are bound (run's counterpart)."""
        self.session.run_with_iobinding(binding)

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()
