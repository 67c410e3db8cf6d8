"""Export one torch module through the project's own `export_graph` / `check_parity`.

Module tests (BigVGAN, DiT, codec, ...) check a submodule in isolation, often at a reduced size. They
declare a `GraphSpec` for it (the project's wrapper class where one exists, otherwise `bare(module)`),
put the module in a `Models` of the tiny config and go through the same exporter, ONNX checker and
parity loop as a bundle, on the same ORT CPU session settings (`cpu_session`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import onnxruntime as ort
from torch import nn

from indextts2_onnx.export.config import IndexTTS2Config, load_config
from indextts2_onnx.export.convert import export_graph
from indextts2_onnx.export.graphs import GraphSpec, Models
from indextts2_onnx.export.verify import Parity, check_parity, cpu_session

TINY_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny" / "config.yaml"


@functools.cache
def tiny_config() -> IndexTTS2Config:
    return load_config(TINY_CONFIG)


def models(**modules: nn.Module) -> Models:
    """`Models` of the tiny config holding `modules` (e.g. `bigvgan=...`); the others stay None."""
    return Models(cfg=tiny_config(), **modules)


def bare(module: nn.Module) -> Callable[[Models], nn.Module]:
    """A spec wrapper for a module whose forward already takes and returns flat tensors."""
    return lambda m: module


def export_and_check(spec: GraphSpec, m: Models, out_dir: Path) -> tuple[ort.InferenceSession, Parity]:
    """`export_graph` to `out_dir`, then `check_parity` over every `spec.cases` (ParityError past
    `spec.atol`); returns the session the parity check ran on, for checks of the graph's I/O."""
    path = export_graph(spec, m, out_dir)
    sess = cpu_session(path)
    return sess, check_parity(spec, m, path, session=sess)
