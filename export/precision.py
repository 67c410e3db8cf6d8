"""Which precision each graph of a bundle gets, and the export-time gate that decides whether it may ship.

A bundle is exported for a target:

    any    every graph fp32: the reference bundle, runs on every provider
    cpu    INT8 (dynamic, per-channel) for the large MatMul stacks: the GPT decoder and conditioning
           encoders, w2v-BERT and the DiT; fp32 elsewhere (fp16 is ~2x slower than fp32 on CPU)
    cuda   fp16 everywhere (the decoder keeps its KV cache in fp16); `gpt_decoder=int4` for 4-bit weights

`--precision` overrides per graph. What each graph may be lowered to, what it is asked for per target and
its gate are part of its spec (`GraphSpec.policy`, graphs.py); the per-target and per-precision tables are
here. Each reduced-precision graph is converted from its fp32 export and gated against it
(`quantize.gate_graph`; the graphs on the GPT path also by greedy decoding, `GreedyProbe`). A graph that
fails falls back to the next higher precision of its target's chain and the manifest records every
attempt; with `strict` a failure is an error instead. The vocoder is never INT8 or 4-bit.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable, ClassVar, Iterable

import numpy as np

from ..runtime.gpt import CodeGenerator, GptTables
from ..runtime.kv_cache import DecoderIO, declared_io
from ..runtime.manifest import GPTDims
from ..runtime.multilingual import MultilingualTokenizer
from ..runtime.sampling import SamplingOptions
from ..runtime.sessions import Graph
from ..runtime.text import Tokenizer
from . import quantize as q
from .graphs import GraphSpec, Models
from .policy import PRECISIONS, ExportPolicy, OnFail, Precision, Target
from .verify import ParityError, cpu_session

# Fallback order per target: a failed precision falls back to the next one to its right. CPU skips fp16
# (slower than fp32 there); CUDA skips INT8 (no CUDA kernel for DynamicQuantizeLinear, ort-notes §4.3).
CHAINS: dict[Target, tuple[Precision, ...]] = {
    Target.ANY: (Precision.INT4, Precision.INT8, Precision.FP16, Precision.FP32),
    Target.CPU: (Precision.INT4, Precision.INT8, Precision.FP32),
    Target.CUDA: (Precision.INT4, Precision.FP16, Precision.FP32),
}

# The device a graph of this precision is meant for (`GraphEntry.device`); the runtime warns on others.
DEVICE: dict[Precision, Target] = {Precision.FP32: Target.ANY, Precision.INT4: Target.ANY,
                                   Precision.INT8: Target.CPU, Precision.FP16: Target.CUDA}

# Greedy probe: prompts x codes decoded with the fp32 graphs and with one converted graph swapped in
# (official size on 2 CPU cores: ~15 s per run).
GATE_TEXTS = (
    "The quick brown fox jumps over the lazy dog while the band plays on.",
    "今天天气很好，我们一起去公园散步，顺便买一些新鲜的水果。",
    "Please call Stella and ask her to bring these things with her from the store.",
)
GATE_CODES = 64
GATE_SEMANTIC_FRAMES = (48, 96, 150)  # w2v-BERT frames per prompt (50 per second)
GATE_LANG_25 = "en"  # IndexTTS-2.5: every prompt is tokenised as English and gets English's language row

# The graphs the probe runs per model family, from the codes upstream (the order a bundle lowers them in).
# 2.5 has no speaker-conditioning graph: its prefix is the CAMPPlus style projected by the GPT tables.
PROBED_GRAPHS: dict[str, tuple[str, ...]] = {
    "2.0": ("gpt_decoder", "gpt_speaker_conditioning", "gpt_emotion_vector", "semantic_encoder"),
    "2.5": ("gpt_decoder", "gpt_emotion_vector", "semantic_encoder"),
}


class PrecisionError(ParityError):
    """A reduced-precision graph failed its gate and `strict` forbids falling back."""


def _target(target: str) -> Target:
    try:
        return Target(target)
    except ValueError:
        raise ValueError(f"--target {target!r}: use one of {', '.join(Target)}") from None


def parse_precision(text: str | None, target: str, specs: Iterable[GraphSpec]) -> dict[str, Precision]:
    """`--precision` for `target` -> {graph: precision} for every graph of `specs`, in their order.

    text: comma-separated items, later items win. A bare precision (`int8`) asks it of every graph that
    allows it; `graph=precision` (`gpt_decoder=int4`) of one graph. Graphs not named keep the target's
    default (`GraphSpec.policy`). Raises ValueError naming the bad item."""
    target = _target(target)
    policies = {spec.name: spec.policy for spec in specs}
    plan = {name: policy.default(target) for name, policy in policies.items()}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        graph, _, prec = item.rpartition("=")
        if prec not in PRECISIONS:
            raise ValueError(f"--precision {item!r}: precision must be one of {', '.join(Precision)}")
        prec = Precision(prec)
        if not graph:
            plan.update({name: prec for name, policy in policies.items() if prec in policy.allowed})
        elif graph not in policies:
            raise ValueError(f"--precision {item!r}: unknown graph {graph!r}; graphs: {', '.join(policies)}")
        elif prec not in policies[graph].allowed:
            raise ValueError(f"--precision {item!r}: {graph} allows {', '.join(policies[graph].allowed)}")
        else:
            plan[graph] = prec
    return plan


def candidates(policy: ExportPolicy, precision: Precision | str, target: Target | str) -> list[Precision]:
    """The precisions to try for a graph of `policy`, in order: the requested one, then its target's
    fallbacks."""
    precision, target = Precision(precision), Target(target)
    if precision == Precision.FP32:
        return [Precision.FP32]
    rank = PRECISIONS.index(precision)
    higher = [p for p in CHAINS[target] if PRECISIONS.index(p) > rank and p in policy.allowed]
    return [precision, *higher]


# --- the manifest record ----------------------------------------------------------------------------------


@dataclass
class Attempt:
    precision: Precision
    passed: bool
    results: list[dict]  # GateResult.to_dict() per gated metric
    size: int  # bytes of the converted graph (+ .data)


def _plain(items: list[tuple[str, object]]) -> dict:
    """asdict's dict_factory for the manifest: enums as their plain string values."""
    return {k: v.value if isinstance(v, Enum) else v for k, v in items}


@dataclass
class Lowering:
    """What happened to one graph: asked for `requested`, shipped `chosen`, after `attempts`."""

    requested: Precision
    chosen: Precision
    attempts: list[Attempt] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self, dict_factory=_plain)


# --- the greedy probe -------------------------------------------------------------------------------------


def _graph(path: Path, name: str) -> Graph:
    sess = cpu_session(path)
    return Graph(name, sess, [i.name for i in sess.get_inputs()], [o.name for o in sess.get_outputs()])


@dataclass
class GreedyProbe:
    """Greedy decoding of a few fixed prompts from front-end features to codes, for the gates of every
    graph on that path (`GRAPHS`; their specs say `policy.probed`).

    features -> semantic_encoder -> speaker conditioning / emotion vector -> prefix -> decoder -> codes

    IndexTTS-2.5 (`family` "2.5") has no speaker-conditioning graph: the prefix is [style @
    speaker_projection + bias + emovec, 0, 0] with a seeded random CAMPPlus style per prompt, the texts go
    through the tiktoken front end as English, and English's language row is added to the text rows.

    The reference runs the fp32 graphs; `gate(name, path)` swaps in one converted graph on top of those
    already accepted (`accept`), so the last gate measures the combination the bundle ships, and passes
    only if every prompt's codes are reproduced. Logit error or cosine alone is not enough: dynamic INT8
    of the real GPT (and of its encoders) kept ~1 % logit error yet changed most greedy codes
    (spec/peers.md). Inputs are seeded unit normals, the scale of SeamlessM4T's normalised features;
    texts go through the bundle's tokenizer. Graphs are loaded per run and released after it, so the
    ~6 GB of fp32 sessions are not held while the quantizer works."""

    # the 2.0 graphs it runs (PROBED_GRAPHS has both families'; the order a bundle lowers them in)
    GRAPHS: ClassVar[tuple[str, ...]] = PROBED_GRAPHS["2.0"]

    files: dict[str, Path]  # the fp32 graph files of the family's PROBED_GRAPHS
    prompts: list[tuple[np.ndarray, np.ndarray, list[int]]]  # (features (1, T, 160), mask (1, T), text ids)
    tables: GptTables
    dims: GPTDims
    io: DecoderIO  # the decoder's I/O by role, as its spec declares them
    reference: list[np.ndarray] = field(default_factory=list)
    accepted: dict[str, Path] = field(default_factory=dict)  # converted graphs that passed, by name
    family: str = "2.0"  # "2.5": CAMPPlus-style prefix and a language row (class docstring)
    styles: list[np.ndarray] = field(default_factory=list)  # 2.5: a (1, style_dim) style per prompt
    lang_id: int | None = None  # 2.5: the language row added to the text rows

    @property
    def graphs(self) -> tuple[str, ...]:
        return PROBED_GRAPHS[self.family]

    @staticmethod
    def build(folder: Path, tables: Path, tokenizer: Path, dims: GPTDims, decoder: GraphSpec,
              family: str = "2.0") -> "GreedyProbe":
        """Prompts, and the reference codes of the fp32 graphs `<name>.onnx` in `folder` (`decoder`: the
        decoder's spec, for its I/O roles and cache layout; `tokenizer`: the bundle's, of `family`)."""
        gpt_tables = GptTables.load(tables, family)
        styles, lang_id = [], None
        if family == "2.5":
            tok25 = MultilingualTokenizer.load(tokenizer)
            tokenize = lambda text: tok25.segments(text, GATE_LANG_25)[0]  # noqa: E731
            lang_id = tok25.language_id(GATE_LANG_25)
            style_dim = gpt_tables.speaker_projection.shape[0]
            styles = [np.random.default_rng(2000 + i).standard_normal((1, style_dim), dtype=np.float32)
                      for i in range(len(GATE_TEXTS))]
        else:
            tok = Tokenizer.load(tokenizer)
            tokenize = lambda text: tok.segments(text)[0]  # noqa: E731
        prompts = []
        for i, (text, frames) in enumerate(zip(GATE_TEXTS, GATE_SEMANTIC_FRAMES)):
            features = np.random.default_rng(1000 + i).standard_normal((1, frames, 160), dtype=np.float32)
            ids = [t for t in tokenize(text) if 0 <= t < dims.number_text_tokens][: dims.max_text_tokens]
            prompts.append((features, np.ones((1, frames), dtype=np.int64), ids))
        files = {name: folder / f"{name}.onnx" for name in PROBED_GRAPHS[family]}
        io = declared_io(decoder.kv_cache, decoder.roles, dims.layers)
        probe = GreedyProbe(files, prompts, gpt_tables, dims, io, family=family, styles=styles, lang_id=lang_id)
        probe.reference = probe.codes()
        return probe

    def codes(self, swap: dict[str, Path] | None = None) -> list[np.ndarray]:
        """Greedy codes of every prompt: accepted graphs and `swap` (name -> file) replace the fp32 ones."""
        paths = {**self.files, **self.accepted, **(swap or {})}
        g = {name: _graph(paths[name], name) for name in self.graphs}
        gen = CodeGenerator(g["gpt_decoder"], self.tables, self.dims, self.io)
        options = SamplingOptions(greedy=True, num_beams=1)
        language = gen.language(self.lang_id)  # None for 2.0
        out = []
        for i, (features, mask, ids) in enumerate(self.prompts):
            semantic = g["semantic_encoder"].run({"input_features": features, "attention_mask": mask})[0]
            emovec = g["gpt_emotion_vector"].run({"semantic": semantic})[0]
            if self.family == "2.5":
                prefix = gen.campplus_prefix(self.styles[i], emovec)
            else:
                prefix = gen.prefix(g["gpt_speaker_conditioning"].run({"semantic": semantic})[0], emovec)
            out.append(gen.generate(prefix, ids, options, GATE_CODES, rng=None, language=language))
        return out

    def gate(self, name: str, path: Path) -> q.GateResult:
        """Greedy agreement with the graph at `path` as `name`, plus every graph accepted so far."""
        if name not in self.graphs:
            raise ValueError(f"{name}: not on the greedy probe's path ({', '.join(self.graphs)})")
        return q.greedy_gate(self.reference, self.codes({name: path}), graph=name)

    def accept(self, name: str, path: Path) -> None:
        """`name` ships as the graph at `path` (its final place): later gates run with it."""
        self.accepted[name] = path


# --- lowering one graph -----------------------------------------------------------------------------------


def convert(spec: GraphSpec, src: Path, dst: Path, precision: Precision, target: Target) -> Path:
    """The `precision` copy of the fp32 graph `src`, written to `dst` (+ .data); refused unless the
    graph's policy allows that precision."""
    if precision not in spec.policy.allowed:
        raise ValueError(f"{spec.name}: {precision} is refused for this graph; it allows "
                         f"{', '.join(spec.policy.allowed)}")
    if precision == Precision.INT8:
        return q.quantize_int8(src, dst)
    keep = True if spec.policy.fp32_io is None else list(spec.policy.fp32_io)
    if precision == Precision.FP16:
        return q.convert_fp16(src, dst, keep_io_types=keep)
    if precision == Precision.INT4:
        if target != Target.CUDA:
            return q.quantize_int4(src, dst)
        half = q.convert_fp16(src, dst.with_name(dst.stem + ".fp16.onnx"), keep_io_types=keep)
        return q.quantize_int4(half, dst)  # fp16 activations, 4-bit weights: the CUDA kernel's layout
    raise ValueError(f"no conversion to {precision!r}")


def gate(spec: GraphSpec, models: Models, fp32: Path, test: Path, precision: Precision,
         probe: GreedyProbe | None) -> list[q.GateResult]:
    """Every gate of `spec` for the converted graph `test`; the greedy probe (graphs on the path to the
    codes: `policy.probed`) only runs if the cheaper output comparison passed."""
    results = q.gate_graph(spec, models, fp32, test, precision)
    if probe is not None and spec.policy.probed and all(r.passed for r in results):
        results.append(probe.gate(spec.name, test))
    return results


def check_on_fail(on_fail: str) -> OnFail:
    """`on_fail` as an OnFail; ValueError unless it is one (checked before any export work starts)."""
    try:
        return OnFail(on_fail)
    except ValueError:
        raise ValueError(f"on_fail={on_fail!r}: use one of {', '.join(OnFail)}") from None


def lower(spec: GraphSpec, models: Models, fp32: Path, work: Path, requested: Precision | str,
          target: Target | str, on_fail: OnFail | str = OnFail.FALLBACK, probe: GreedyProbe | None = None,
          progress: Callable[[str], None] = lambda msg: None) -> tuple[Path, Lowering]:
    """Convert and gate `fp32` down its fallback chain -> (the graph to ship, the record).

    The first precision whose gates all pass wins; fp32 always passes (its parity against torch was
    checked at export). When a gate fails, on_fail says what happens: "fallback" tries the next precision,
    "error" raises PrecisionError (`--strict`), "keep" ships the failed graph anyway with the failure on
    record (`--keep-failed`: for measuring speed on random weights, never for production)."""
    on_fail, requested, target = check_on_fail(on_fail), Precision(requested), Target(target)
    record = Lowering(requested=requested, chosen=Precision.FP32)
    for precision in candidates(spec.policy, requested, target):
        if precision == Precision.FP32:
            return fp32, record
        dst = convert(spec, fp32, work / precision / fp32.name, precision, target)
        results = gate(spec, models, fp32, dst, precision, probe)
        passed = all(r.passed for r in results)
        record.attempts.append(Attempt(precision, passed, [r.to_dict() for r in results], q.file_size(dst)))
        progress(f"{spec.name} {precision}: " + ", ".join(
            f"{r.metric} {r.value:.4g} ({'ok' if r.passed else 'FAIL'}, limit {r.threshold:g})" for r in results))
        if passed or on_fail == OnFail.KEEP:
            record.chosen = precision
            return dst, record
        if on_fail == OnFail.ERROR:
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
