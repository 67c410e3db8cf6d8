"""Lower-precision copies of exported graphs, and the gates that decide whether a copy may ship.

Three conversions, each on one graph file (`<name>.onnx` + `<name>.onnx.data`) at a time:

    quantize_int8   dynamic INT8, per-channel S8 weights, MatMul only (CPU: the GPT stacks)
    quantize_int4   weight-only 4-bit blocks (MatMulNBits) on MatMuls: the smallest GPT, CPU or CUDA
    convert_fp16    fp16 weights and compute (CUDA bundles; ~2x slower than fp32 on CPU)

The gates compare a converted graph with its fp32 original in ONNX Runtime on the graph's own parity
cases (`GraphSpec.cases`) and state a pass/fail per metric. Each graph's gate (metric, threshold, outputs)
is part of its spec (`GraphSpec.policy.gate`); the thresholds are named constants in `policy.py`, each
saying what it separates. Logit error alone is not enough for the GPT: dynamic INT8 of the real GPT had
~1 % logit error yet kept only a quarter of greedy codes (spec/peers.md), so the decoder gate also asks
for full greedy agreement (`greedy_gate`), computed from codes the caller generated.

Which graph gets which precision, the fallbacks and the manifest record live in `precision.py`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import onnx

from .graphs import GraphSpec, Models
from .policy import GREEDY_AGREEMENT_MIN, Precision
from .verify import cpu_session

_TINY = 1e-30


# --- conversions ------------------------------------------------------------------------------------------


def _load(src: Path) -> onnx.ModelProto:
    """The graph with its external weights pulled in (ORT's quantizer needs them in memory)."""
    return onnx.load(str(src), load_external_data=True)


def _clear(dst: Path) -> None:
    """Remove a previous dst and its `.data`: onnx appends external tensors to an existing data file."""
    for p in (dst, dst.with_name(dst.name + ".data")):
        p.unlink(missing_ok=True)


def _save(model: onnx.ModelProto, dst: Path) -> Path:
    """Save in the bundle's layout: `<dst>` plus one `<dst>.data` next to it."""
    _clear(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=dst.name + ".data", size_threshold=1024)
    return dst


def quantize_int8(src: Path, dst: Path, exclude_nodes: Iterable[str] = ()) -> Path:
    """Dynamic INT8 copy of `src`: per-channel S8 weights on constant-B MatMuls, fp32 everywhere else.

    Why this scheme: on GPT-shaped stacks it was the fastest CPU variant at the lowest error (ort-notes
    §4.1); attention QK/AV MatMuls stay fp32 (`MatMulConstBOnly`). The model is loaded with its external
    data and passed as a ModelProto, so ORT's shape inference runs in its own temp dir instead of writing
    next to the bundle; `quant_pre_process` is skipped (it fails on dynamo graphs). The output is always
    written with external data (`<dst>.data`), like the rest of the bundle.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = Path(src), Path(dst)
    _clear(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(_load(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul"], nodes_to_exclude=list(exclude_nodes),
                     use_external_data_format=True, extra_options={"MatMulConstBOnly": True})
    return dst


def quantize_int4(src: Path, dst: Path, block_size: int = 32, accuracy_level: int = 4,
                  exclude_nodes: Iterable[str] = ()) -> Path:
    """4-bit weight-only copy of `src`: constant-B MatMuls become MatMulNBits (symmetric, blocks along K).

    Block 32 symmetric was the most accurate 4-bit layout measured (ort-notes §4.1); accuracy_level 4
    (int8 activations) is what makes it fast on CPU and is ignored by the CUDA kernel. The source may be
    fp32 (CPU bundles) or fp16 (CUDA bundles: fp16 activations with 4-bit weights).
    """
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    src, dst = Path(src), Path(dst)
    quantizer = MatMulNBitsQuantizer(_load(src), bits=4, block_size=block_size, is_symmetric=True,
                                     accuracy_level=accuracy_level, nodes_to_exclude=list(exclude_nodes),
                                     op_types_to_quantize=("MatMul",))
    quantizer.process()
    return _save(quantizer.model.model, dst)


def convert_fp16(src: Path, dst: Path, keep_io_types: bool | Sequence[str] = True,
                 op_block_list: Sequence[str] | None = None) -> Path:
    """fp16 copy of `src` (weights and compute), for CUDA bundles.

    keep_io_types=True leaves the graph's float inputs/outputs fp32 (Casts at the edges: a drop-in file);
    False makes them fp16; a list keeps just those names fp32 (the decoder: embeddings in, logits and
    hidden states out stay fp32 while past/present become fp16, ort-notes §3.6). `op_block_list`
    defaults to the converter's own list of ops kept in fp32.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    src, dst = Path(src), Path(dst)
    kwargs = {} if op_block_list is None else {"op_block_list": list(op_block_list)}
    if not isinstance(keep_io_types, bool):
        keep_io_types = list(keep_io_types)
    # shape inference inside the converter serializes the proto (2 GB limit); our graphs carry no
    # value_info it needs, so skip it rather than fail on the full-size GPT
    model = convert_float_to_float16(_load(src), keep_io_types=keep_io_types, disable_shape_infer=True,
                                     **kwargs)
    return _save(model, dst)


def file_size(path: Path) -> int:
    """Bytes of a graph file plus its external data file, if any."""
    path = Path(path)
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


# --- metrics (pure) ---------------------------------------------------------------------------------------


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).ravel()


def logit_error(ref, test) -> float:
    """Relative L2 error ||test - ref|| / ||ref|| (0 = identical; inf if ref is all zero and test is not)."""
    r, t = _f64(ref), _f64(test)
    num, den = float(np.linalg.norm(t - r)), float(np.linalg.norm(r))
    return num / den if den > 0 else (0.0 if num == 0 else math.inf)


def snr_db(ref, test) -> float:
    """Signal-to-noise ratio of `test` against `ref` in dB: 10 log10(sum ref^2 / sum (test - ref)^2)."""
    r, t = _f64(ref), _f64(test)
    signal, noise = float(np.sum(r * r)), float(np.sum((t - r) ** 2))
    if noise == 0:
        return math.inf
    return 10.0 * math.log10(max(signal, _TINY) / noise)


def cosine(ref, test) -> float:
    """Cosine similarity of the flattened tensors (0 when either is all zero)."""
    r, t = _f64(ref), _f64(test)
    den = float(np.linalg.norm(r) * np.linalg.norm(t))
    return float(r @ t) / den if den > 0 else 0.0


def first_divergence(ref_codes, test_codes) -> int:
    """Index of the first differing code; min(len) if one is a prefix of the other, len if equal."""
    r, t = np.asarray(ref_codes).ravel(), np.asarray(test_codes).ravel()
    n = min(len(r), len(t))
    diff = np.nonzero(r[:n] != t[:n])[0]
    if diff.size:
        return int(diff[0])
    return n if len(r) != len(t) else len(r)


METRICS: dict[str, Callable] = {"rel_l2": logit_error, "snr_db": snr_db, "cosine": cosine}
HIGHER_IS_BETTER = {"rel_l2": False, "snr_db": True, "cosine": True, "greedy_agreement": True}


# --- gates ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateResult:
    graph: str
    metric: str  # "rel_l2:logits", "snr_db:velocity", "greedy_agreement", ...
    value: float  # the worst value over every case
    threshold: float
    passed: bool

    def to_dict(self) -> dict:
        return asdict(self)


def gate(graph: str, metric: str, value: float, threshold: float) -> GateResult:
    """Pass/fail of one value; the direction comes from the metric's base name (NaN always fails)."""
    higher = HIGHER_IS_BETTER[metric.split(":")[0]]
    ok = (value >= threshold) if higher else (value <= threshold)
    return GateResult(graph, metric, float(value), float(threshold), bool(ok and not math.isnan(value)))


def _agreement(ref, test) -> float:
    """Fraction of `ref` reproduced before the first difference; below 1 unless the sequences are equal
    (a test run that continues past the reference's end missed the stop token)."""
    r, t = np.asarray(ref).ravel(), np.asarray(test).ravel()
    if np.array_equal(r, t):
        return 1.0
    return min(first_divergence(r, t), len(r) - 1) / len(r) if len(r) else 0.0


def greedy_gate(ref_codes: Sequence, test_codes: Sequence, graph: str = "gpt_decoder",
                threshold: float = GREEDY_AGREEMENT_MIN) -> GateResult:
    """Greedy agreement over several prompts: the worst first-divergence / reference length.

    ref_codes/test_codes: one code sequence per prompt, from greedy decoding with the fp32 and the
    converted decoder. 1.0 means every prompt reproduced its reference completely (and stopped there).
    """
    if len(ref_codes) != len(test_codes) or not ref_codes:
        raise ValueError(f"need one test sequence per reference prompt, got {len(ref_codes)} and {len(test_codes)}")
    worst = min(_agreement(r, t) for r, t in zip(ref_codes, test_codes))
    return gate(graph, "greedy_agreement", worst, threshold)


def _worst(metric: str, values: Iterable[float]) -> float:
    values = list(values)
    return max(values) if not HIGHER_IS_BETTER[metric] else min(values)


def _feed(sess, spec: GraphSpec, inputs: tuple) -> dict:
    """Numpy feeds cast to each session input's dtype (fp16 graphs with keep_io_types=False take fp16)."""
    types = {i.name: i.type for i in sess.get_inputs()}
    feeds = {}
    for name, t in zip(spec.inputs, inputs):
        a = t.numpy() if hasattr(t, "numpy") else np.asarray(t)
        if types.get(name) == "tensor(float16)":
            a = a.astype(np.float16)
        feeds[name] = a
    return feeds


def _row_metric(metric: str, ref: np.ndarray, test: np.ndarray) -> float:
    """Cosine is taken per batch row (one embedding each) and the worst row kept; the others whole."""
    fn = METRICS[metric]
    if metric == "cosine" and ref.ndim > 1:
        return _worst(metric, (fn(r, t) for r, t in zip(ref, test)))
    return fn(ref, test)


def _torch_reference(spec: GraphSpec, models: Models):
    """Outputs of the torch module `spec` wraps, as numpy, for one case's inputs."""
    import torch

    module = spec.wrapper(models).eval()

    def run(names: list[str], inputs: tuple) -> list[np.ndarray]:
        with torch.no_grad():
            out = module(*inputs)
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [t.numpy() for t in out]
    return run


def compare_graph(spec: GraphSpec, models: Models, fp32_path: Path | None, test_path: Path,
                  metric: str) -> dict[str, float]:
    """Run every parity case of `spec` through the reference and the test graph (ORT CPU) and return the
    worst `metric` per float output. The reference is the fp32 graph at `fp32_path`, or the torch module
    itself when `fp32_path` is None (`verify` of a lowered bundle); otherwise `models` only feeds
    `spec.cases` (the input sizes)."""
    test_sess = cpu_session(Path(test_path))
    if fp32_path is None:
        reference = _torch_reference(spec, models)
    else:
        ref_sess = cpu_session(Path(fp32_path))
        reference = lambda names, inputs: ref_sess.run(names, _feed(ref_sess, spec, inputs))  # noqa: E731
    names = list(spec.outputs)
    per_output: dict[str, list[float]] = {}
    for inputs in spec.cases(models):
        ref = reference(names, inputs)
        test = test_sess.run(names, _feed(test_sess, spec, inputs))
        for name, r, t in zip(names, ref, test):
            if not np.issubdtype(r.dtype, np.floating) or not r.size:
                continue
            if r.shape != t.shape:
                raise ValueError(f"{spec.name}: output {name} has shape {t.shape}, fp32 gives {r.shape}")
            per_output.setdefault(name, []).append(_row_metric(metric, r.astype(np.float32),
                                                               t.astype(np.float32)))
    return {name: _worst(metric, vals) for name, vals in per_output.items()}


def gate_graph(spec: GraphSpec, models: Models, fp32_path: Path | None, test_path: Path,
               precision: Precision | None = None) -> list[GateResult]:
    """The gate of `spec.policy` applied to a converted graph of `precision` (which may have its own
    threshold): one GateResult per gated output (reference: the fp32 graph, or the torch module when
    `fp32_path` is None)."""
    rule = spec.policy.gate
    if rule is None:
        raise ValueError(f"{spec.name}: no precision gate, this graph ships in fp32 only")
    threshold = rule.threshold_for(precision)
    values = compare_graph(spec, models, fp32_path, test_path, rule.metric)
    chosen = rule.outputs or tuple(values)
    return [gate(spec.name, f"{rule.metric}:{name}", values[name], threshold) for name in chosen]
