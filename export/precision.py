"""Which precision each graph of a bundle gets, and the export-time gate that decides whether it may ship.

A bundle is exported for a target:

    any    every graph fp32: the reference bundle, runs on every provider
    cpu    INT8 (dynamic, per-channel) for the large MatMul stacks: the GPT decoder and conditioning
           encoders, w2v-BERT and the DiT; fp32 elsewhere (fp16 is ~2x slower than fp32 on CPU)
    cuda   fp16 everywhere (the decoder keeps its KV cache in fp16); `gpt_decoder=int4` for 4-bit weights

`--precision` overrides per graph. Each reduced-precision graph is converted from its fp32 export and
gated against it (`quantize.gate_graph`; the decoder also by greedy decoding, `GreedyProbe`). A graph
that fails falls back to the next higher precision of its target's chain and the manifest records every
attempt; with `strict` a failure is an error instead. The vocoder is never INT8 or 4-bit.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..runtime.gpt import CodeGenerator, GptTables
from ..runtime.manifest import GPTDims
from ..runtime.sampling import SamplingOptions
from ..runtime.sessions import Graph
from ..runtime.text import Tokenizer
from . import quantize as q
from .graphs import GraphSpec, Models
from .verify import ParityError, cpu_session

PRECISIONS = ("int4", "int8", "fp16", "fp32")  # lowest first
TARGETS = ("any", "cpu", "cuda")

# What each graph may be lowered to. INT8/4-bit only act on MatMuls, so conv stacks (CAMPPlus, the
# regulator, BigVGAN) gain nothing from them, and BigVGAN loses 10+ dB (ort-notes §4.2). The codec's
# nearest-code search is a MatMul too, but a flipped code changes the prompt: fp16 at most.
ALLOWED: dict[str, tuple[str, ...]] = {
    "gpt_decoder": ("int4", "int8", "fp16", "fp32"),
    "gpt_speaker_conditioning": ("int8", "fp16", "fp32"),
    "gpt_emotion_vector": ("int8", "fp16", "fp32"),
    "semantic_encoder": ("int8", "fp16", "fp32"),
    "semantic_codec": ("fp16", "fp32"),
    "campplus": ("fp16", "fp32"),
    "length_regulator": ("fp16", "fp32"),
    "latent_projector": ("int8", "fp16", "fp32"),
    "dit": ("int8", "fp16", "fp32"),
    "bigvgan": ("fp16", "fp32"),
}

# Per target: the precision each graph is asked for when the user does not say (missing: fp32).
DEFAULTS: dict[str, dict[str, str]] = {
    "any": {},
    "cpu": {"gpt_decoder": "int8", "gpt_speaker_conditioning": "int8", "gpt_emotion_vector": "int8",
            "semantic_encoder": "int8", "dit": "int8"},
    "cuda": {name: "fp16" for name in ALLOWED},
}

# Fallback order per target: a failed precision falls back to the next one to its right. CPU skips fp16
# (slower than fp32 there); CUDA skips INT8 (no CUDA kernel for DynamicQuantizeLinear, ort-notes §4.3).
CHAINS: dict[str, tuple[str, ...]] = {
    "any": ("int4", "int8", "fp16", "fp32"),
    "cpu": ("int4", "int8", "fp32"),
    "cuda": ("int4", "fp16", "fp32"),
}

# The device a graph of this precision is meant for (`GraphEntry.device`); the runtime warns on others.
DEVICE = {"fp32": "any", "int4": "any", "int8": "cpu", "fp16": "cuda"}

# fp16 decoder: float I/O stays fp32 except the cache, so the runtime feeds embeddings and reads logits
# as before while past/present live in fp16 (half the memory and bandwidth per step).
DECODER_FP32_IO = ("inputs_embeds", "logits", "hidden_states")

# Greedy probe: prompts x codes decoded with the fp32 graphs and with one converted graph swapped in
# (official size on 2 CPU cores: ~15 s per run).
GATE_TEXTS = (
    "The quick brown fox jumps over the lazy dog while the band plays on.",
    "今天天气很好，我们一起去公园散步，顺便买一些新鲜的水果。",
    "Please call Stella and ask her to bring these things with her from the store.",
)
GATE_CODES = 64
GATE_SEMANTIC_FRAMES = (48, 96, 150)  # w2v-BERT frames per prompt (50 per second)


class PrecisionError(ParityError):
    """A reduced-precision graph failed its gate and `strict` forbids falling back."""


def parse_precision(text: str | None, target: str) -> dict[str, str]:
    """`--precision` for `target` -> {graph: precision} for every graph.

    text: comma-separated items, later items win. A bare precision (`int8`) asks it of every graph that
    allows it; `graph=precision` (`gpt_decoder=int4`) of one graph. Graphs not named keep the target's
    default. Raises ValueError naming the bad item."""
    if target not in TARGETS:
        raise ValueError(f"--target {target!r}: use one of {', '.join(TARGETS)}")
    plan = {name: DEFAULTS[target].get(name, "fp32") for name in ALLOWED}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        graph, _, prec = item.rpartition("=")
        if prec not in PRECISIONS:
            raise ValueError(f"--precision {item!r}: precision must be one of {', '.join(PRECISIONS)}")
        if not graph:
            plan.update({name: prec for name, allowed in ALLOWED.items() if prec in allowed})
        elif graph not in ALLOWED:
            raise ValueError(f"--precision {item!r}: unknown graph {graph!r}; graphs: {', '.join(ALLOWED)}")
        elif prec not in ALLOWED[graph]:
            raise ValueError(f"--precision {item!r}: {graph} allows {', '.join(ALLOWED[graph])}")
        else:
            plan[graph] = prec
    return plan


def candidates(graph: str, precision: str, target: str) -> list[str]:
    """The precisions to try for `graph`, in order: the requested one, then its target's fallbacks."""
    rank = PRECISIONS.index(precision)
    higher = [p for p in CHAINS[target] if PRECISIONS.index(p) > rank and p in ALLOWED[graph]]
    return [precision, *higher] if precision != "fp32" else ["fp32"]


# --- the manifest record ----------------------------------------------------------------------------------


@dataclass
class Attempt:
    precision: str
    passed: bool
    results: list[dict]  # GateResult.to_dict() per gated metric
    size: int  # bytes of the converted graph (+ .data)


@dataclass
class Lowering:
    """What happened to one graph: asked for `requested`, shipped `chosen`, after `attempts`."""

    requested: str
    chosen: str
    attempts: list[Attempt] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# --- the greedy probe -------------------------------------------------------------------------------------


def _graph(path: Path, name: str) -> Graph:
    sess = cpu_session(path)
    return Graph(name, sess, [i.name for i in sess.get_inputs()], [o.name for o in sess.get_outputs()])


# Graphs whose error reaches the GPT's codes, upstream to downstream: their gate includes greedy decoding.
PROBED = ("semantic_encoder", "gpt_speaker_conditioning", "gpt_emotion_vector", "gpt_decoder")


@dataclass
class GreedyProbe:
    """Greedy decoding of a few fixed prompts from front-end features to codes, for the gates of every
    graph on that path (`PROBED`).

    features -> semantic_encoder -> speaker conditioning / emotion vector -> prefix -> decoder -> codes

    The reference runs the fp32 graphs; `gate(name, path)` swaps in one converted graph on top of those
    already accepted (`accept`), so the last gate measures the combination the bundle ships, and passes
    only if every prompt's codes are reproduced. Logit error or cosine alone is not enough: dynamic INT8
    of the real GPT (and of its encoders) kept ~1 % logit error yet changed most greedy codes
    (spec/peers.md). Inputs are seeded unit normals, the scale of SeamlessM4T's normalised features;
    texts go through the bundle's tokenizer. Graphs are loaded per run and released after it, so the
    ~6 GB of fp32 sessions are not held while the quantizer works."""

    files: dict[str, Path]  # the fp32 graph files of PROBED
    prompts: list[tuple[np.ndarray, np.ndarray, list[int]]]  # (features (1, T, 160), mask (1, T), text ids)
    tables: GptTables
    dims: GPTDims
    reference: list[np.ndarray] = field(default_factory=list)
    accepted: dict[str, Path] = field(default_factory=dict)  # converted graphs that passed, by name

    @staticmethod
    def build(folder: Path, tables: Path, tokenizer: Path, dims: GPTDims) -> "GreedyProbe":
        """Prompts, and the reference codes of the fp32 graphs `<name>.onnx` in `folder`."""
        tok = Tokenizer.load(tokenizer)
        prompts = []
        for i, (text, frames) in enumerate(zip(GATE_TEXTS, GATE_SEMANTIC_FRAMES)):
            features = np.random.default_rng(1000 + i).standard_normal((1, frames, 160), dtype=np.float32)
            ids = [t for t in tok.segments(text)[0] if 0 <= t < dims.number_text_tokens][: dims.max_text_tokens]
            prompts.append((features, np.ones((1, frames), dtype=np.int64), ids))
        files = {name: folder / f"{name}.onnx" for name in PROBED}
        probe = GreedyProbe(files, prompts, GptTables.load(tables), dims)
        probe.reference = probe.codes()
        return probe

    def codes(self, swap: dict[str, Path] | None = None) -> list[np.ndarray]:
        """Greedy codes of every prompt: accepted graphs and `swap` (name -> file) replace the fp32 ones."""
        paths = {**self.files, **self.accepted, **(swap or {})}
        g = {name: _graph(paths[name], name) for name in PROBED}
        gen = CodeGenerator(g["gpt_decoder"], self.tables, self.dims)
        options = SamplingOptions(greedy=True, num_beams=1)
        out = []
        for features, mask, ids in self.prompts:
            semantic = g["semantic_encoder"].run({"input_features": features, "attention_mask": mask})[0]
            speaker = g["gpt_speaker_conditioning"].run({"semantic": semantic})[0]
            emovec = g["gpt_emotion_vector"].run({"semantic": semantic})[0]
            out.append(gen.generate(gen.prefix(speaker, emovec), ids, options, GATE_CODES, rng=None))
        return out

    def gate(self, name: str, path: Path) -> q.GateResult:
        """Greedy agreement with the graph at `path` as `name`, plus every graph accepted so far."""
        return q.greedy_gate(self.reference, self.codes({name: path}), graph=name)

    def accept(self, name: str, path: Path) -> None:
        """`name` ships as the graph at `path` (its final place): later gates run with it."""
        self.accepted[name] = path


# --- lowering one graph -----------------------------------------------------------------------------------


def convert(spec: GraphSpec, src: Path, dst: Path, precision: str, target: str) -> Path:
    """The `precision` copy of the fp32 graph `src`, written to `dst` (+ .data)."""
    if precision == "int8":
        return q.quantize_int8(src, dst)
    keep = list(DECODER_FP32_IO) if spec.name == "gpt_decoder" else True
    if precision == "fp16":
        return q.convert_fp16(src, dst, keep_io_types=keep)
    if precision == "int4":
        if target != "cuda":
            return q.quantize_int4(src, dst)
        half = q.convert_fp16(src, dst.with_name(dst.stem + ".fp16.onnx"), keep_io_types=keep)
        return q.quantize_int4(half, dst)  # fp16 activations, 4-bit weights: the CUDA kernel's layout
    raise ValueError(f"no conversion to {precision!r}")


def gate(spec: GraphSpec, models: Models, fp32: Path, test: Path, precision: str,
         probe: GreedyProbe | None) -> list[q.GateResult]:
    """Every gate of `spec` for the converted graph `test`; the greedy probe (graphs on the path to the
    codes) only runs if the cheaper output comparison passed."""
    results = q.gate_graph(spec, models, fp32, test, precision)
    if probe is not None and spec.name in PROBED and all(r.passed for r in results):
        results.append(probe.gate(spec.name, test))
    return results


ON_FAIL = ("fallback", "error", "keep")


def check_on_fail(on_fail: str) -> None:
    """ValueError unless `on_fail` is one of ON_FAIL (checked before any export work starts)."""
    if on_fail not in ON_FAIL:
        raise ValueError(f"on_fail={on_fail!r}: use one of {', '.join(ON_FAIL)}")


def lower(spec: GraphSpec, models: Models, fp32: Path, work: Path, requested: str, target: str,
          on_fail: str = "fallback", probe: GreedyProbe | None = None,
          progress: Callable[[str], None] = lambda msg: None) -> tuple[Path, Lowering]:
    """Convert and gate `fp32` down its fallback chain -> (the graph to ship, the record).

    The first precision whose gates all pass wins; fp32 always passes (its parity against torch was
    checked at export). When a gate fails, on_fail says what happens: "fallback" tries the next precision,
    "error" raises PrecisionError (`--strict`), "keep" ships the failed graph anyway with the failure on
    record (`--keep-failed`: for measuring speed on random weights, never for production)."""
    check_on_fail(on_fail)
    record = Lowering(requested=requested, chosen="fp32")
    for precision in candidates(spec.name, requested, target):
        if precision == "fp32":
            return fp32, record
        dst = convert(spec, fp32, work / precision / fp32.name, precision, target)
        results = gate(spec, models, fp32, dst, precision, probe)
        passed = all(r.passed for r in results)
        record.attempts.append(Attempt(precision, passed, [r.to_dict() for r in results], q.file_size(dst)))
        progress(f"{spec.name} {precision}: " + ", ".join(
            f"{r.metric} {r.value:.4g} ({'ok' if r.passed else 'FAIL'}, limit {r.threshold:g})" for r in results))
        if passed or on_fail == "keep":
            record.chosen = precision
            return dst, record
        if on_fail == "error":
            raise PrecisionError(f"{spec.name}: {precision} failed its gate "
                                 f"({', '.join(r.metric for r in results if not r.passed)}); "
                                 f"drop --strict to fall back, or ask another --precision")
    return fp32, record


def move_graph(src: Path, dst: Path) -> None:
    """Move a graph file and its `.data` next to it to `dst` (same file name: the data reference holds)."""
    if src.name != dst.name:
        raise ValueError(f"{src} -> {dst}: a graph keeps its file name (its .data is referenced by name)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    for a, b in ((src, dst), (src.with_name(src.name + ".data"), dst.with_name(dst.name + ".data"))):
        b.unlink(missing_ok=True)
        if a.exists():
            shutil.move(a, b)
