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
    strip_stack_traces(path)
    onnx.checker.check_model(str(path))  # the path form handles external data
    _LOG.info("exported %s", path.name)
    return path


# torch.onnx records, per node, the Python stack that made it: absolute source paths of the machine that
# exported, and line numbers that change a graph's checksum with every edit of this package. The module
# scopes (namespace, name_scopes) stay: they are what a profile needs.
STACK_TRACE = "pkg.torch.onnx.stack_trace"


def strip_stack_traces(path: Path) -> None:
    """Remove the stack-trace metadata of every node (graph and local functions) of the graph at `path`;
    its external data file is not touched."""
    model = onnx.load(str(path), load_external_data=False)
    for nodes in [model.graph.node, *(f.node for f in model.functions)]:
        for node in nodes:
            keep = [p for p in node.metadata_props if p.key != STACK_TRACE]
            del node.metadata_props[:]
            node.metadata_props.extend(keep)
    onnx.save(model, str(path))
