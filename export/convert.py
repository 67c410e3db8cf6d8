"""torch -> ONNX, the one place that calls `torch.onnx.export`."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnx
import torch

from .graphs import GraphSpec, Models

_LOG = logging.getLogger(__name__)

OPSET = 20  # dynamo default in torch 2.13: Gelu(tanh) and LayerNormalization are native ops


def export_graph(spec: GraphSpec, models: Models, out_dir: Path) -> Path:
    """Trace the spec's wrapper to `out_dir/{spec.name}.onnx` (+ `.onnx.data`) and check the file.

    Weights always go to external data: the GPT body alone is close to protobuf's 2 GiB limit."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{spec.name}.onnx"
    module = spec.wrapper(models).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        program = torch.onnx.export(
            module,
            spec.example(models),
            dynamo=True,
            opset_version=OPSET,
            input_names=list(spec.inputs),
            output_names=list(spec.outputs),
            dynamic_shapes=spec.dynamic_shapes(),
            custom_translation_table=spec.translations() if spec.translations else None,
            verbose=False,
        )
    program.save(str(path), external_data=True)
    onnx.checker.check_model(str(path))  # the path form handles external data
    _LOG.info("exported %s", path.name)
    return path
