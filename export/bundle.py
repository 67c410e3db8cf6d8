"""Build a runtime bundle from an official checkpoint folder: every graph, the tables, the manifest.

The bundle is written into a temporary sibling folder (`staging.staged_folder`) and swapped into place
only when every graph passed its parity check, so a failed export never leaves a half-written bundle.
Every graph is exported and checked in fp32 first; a `target` of cpu or cuda then lowers graphs to the
precision `precision.py` plans for them, each behind its gate.

The checkpoint's family (config.IndexTTS2Config.family) picks the graph set: graphs.all_graphs for
IndexTTS-2, graphs25.graphs_25 for IndexTTS-2.5, whose tables hold the language rows and the speaker
projection instead of the speed rows and whose tokenizer is the tiktoken file. Either family adds the
emotion-from-text decoder (qwen_emotion) where the checkpoint has the emotion model folder
(emotion_text.py); without it the manifest's emotion_text is null and the runtime refuses the mode.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..runtime.manifest import (FORMAT_VERSION, MANIFEST, AcousticDims, FileEntry, GPTDims, GraphEntry,
                                Manifest, load_manifest, sha256, verify_checksums)
from .checkpoint import TIKTOKEN_FILE, CheckpointError, CheckpointPaths, folder_family, load_gpt, read_matrix
from .config import IndexTTS2Config, QwenConfig, load_config, qwen_config_from_dict
from .convert import OPSET, export_graph
from .staging import check_out, staged_folder
from .filterbanks import slaney_mel_filterbank
from .emotion_text import BUNDLE_TOKENIZER, emotion_entry, read_emotion_folder
from .graphs import DEFAULT_DECODER, EMOTION_TEXT_GRAPH, GraphSpec, Models, all_graphs, emotion_text_graph
from .graphs25 import graphs_25
from .policy import OnFail, Precision, Target
from .precision import (DEVICE, PROBED_GRAPHS, GreedyProbe, Lowering, check_on_fail, lower, move_graph,
                        parse_precision)
from .modules.bigvgan import load_bigvgan
from .modules.campplus import load_campplus
from .modules.codec import load_codec
from .modules.enhanced_codec import load_enhanced_codec
from .modules.gpt import UnifiedVoice
from .modules.qwen3 import load_qwen
from .modules.s2mel import load_s2mel
from .modules.w2vbert import load_semantic_encoder
from .verify import check_parity

_LOG = logging.getLogger(__name__)

Progress = Callable[[str], None]


def bundle_graphs(cfg: IndexTTS2Config, decoder: str = DEFAULT_DECODER,
                  qwen: QwenConfig | None = None) -> tuple[GraphSpec, ...]:
    """The graphs of a bundle of cfg's family, in bundle order (the decoder in the `decoder` layout), and
    the emotion-from-text decoder last when the checkpoint has that model (`qwen`: its config)."""
    specs = graphs_25(cfg, decoder) if cfg.is_25 else all_graphs(cfg, decoder)
    return specs + ((emotion_text_graph(qwen),) if qwen is not None else ())


def emotion_config(manifest: Manifest) -> QwenConfig | None:
    """The emotion model's config a bundle was exported with (None: the bundle has no such model)."""
    e = manifest.emotion_text
    return None if e is None else qwen_config_from_dict(e.config, "manifest emotion_text.config")


def gpt_dims(cfg: IndexTTS2Config) -> GPTDims:
    g = cfg.gpt
    return GPTDims(
        model_dim=g.model_dim, heads=g.heads, layers=g.layers, head_dim=g.head_dim, semantic_dim=g.semantic_dim,
        condition_num_latent=g.condition_num_latent, number_text_tokens=g.number_text_tokens,
        number_mel_codes=g.number_mel_codes, start_mel_token=g.start_mel_token, stop_mel_token=g.stop_mel_token,
        start_text_token=g.start_text_token, stop_text_token=g.stop_text_token,
        max_mel_tokens=g.max_mel_tokens, max_text_tokens=g.max_text_tokens,
    )


def acoustic_dims(models: Models) -> AcousticDims:
    c, voc = models.cfg, models.bigvgan.cfg
    return AcousticDims(
        sample_rate=voc.sampling_rate, hop_length=voc.hop_size, n_mels=c.s2mel.mel.n_mels,
        semantic_dim=c.semantic_codec.hidden_size, content_dim=c.s2mel.length_regulator.channels,
        style_dim=c.s2mel.style_dim, codebook_size=c.semantic_codec.codebook_size,
        dit_min_frames=models.dit.min_frames,
    )


def load_models(paths: CheckpointPaths, cfg: IndexTTS2Config, progress: Progress, emotion_text: bool = True) -> Models:
    """Every component of the checkpoint, loaded strictly into our torch modules (2.5: the EnhancedCodec
    from codec.pth as `codec`, no gpt_layer), and the emotion-from-text model when its folder exists and
    `emotion_text` asks for it."""
    progress(f"loading {paths.gpt.name}")
    gpt = load_gpt(paths, cfg)
    codec_path = paths.codec if cfg.is_25 else paths.semantic_codec
    progress(f"loading {paths.w2v_bert.name}, {codec_path.name}, {paths.campplus.name}")
    encoder = load_semantic_encoder(paths.w2v_bert, paths.w2v_stats, cfg.semantic_layer)
    codec = (load_enhanced_codec if cfg.is_25 else load_codec)(codec_path, cfg.semantic_codec)
    campplus = load_campplus(paths.campplus, cfg.s2mel.style_dim)
    progress(f"loading {paths.s2mel.name}, {paths.bigvgan.name}")
    gpt_layer, regulator, dit = load_s2mel(paths.s2mel, cfg)
    bigvgan = load_bigvgan(paths.bigvgan)
    if bigvgan.cfg.num_mels != cfg.s2mel.mel.n_mels:
        raise CheckpointError(f"{paths.bigvgan}: num_mels {bigvgan.cfg.num_mels} but config.yaml's s2mel has "
                              f"{cfg.s2mel.mel.n_mels} mel bands")
    qwen = None
    if emotion_text and paths.qwen_emo.is_dir():
        progress(f"loading the emotion-from-text model {paths.qwen_emo.name}")
        qwen = load_qwen(paths.qwen_emo)
    elif emotion_text:
        progress(f"no emotion-from-text model ({paths.qwen_emo} is not there): the bundle will not offer the mode")
    return Models(cfg, gpt=gpt, semantic_encoder=encoder, codec=codec, campplus=campplus, gpt_layer=gpt_layer,
                  length_regulator=regulator, dit=dit, bigvgan=bigvgan, qwen=qwen)


def _write_tables(gpt: UnifiedVoice, out: Path) -> None:
    """gpt_tables.npz: the embedding tables the runtime builds decoder inputs from (runtime.gpt.GptTables).
    2.0 adds its two speed rows; 2.5 its language rows and the CAMPPlus style projection, stored as
    style @ speaker_projection + speaker_projection_bias = spk_emb_proj(style)."""
    tables = {
        "text_embedding": gpt.text_embedding.weight,
        "text_pos_embedding": gpt.text_pos_embedding.emb.weight,
        "mel_embedding": gpt.mel_embedding.weight,
        "mel_pos_embedding": gpt.mel_pos_embedding.emb.weight,
    }
    if gpt.cfg.campplus:
        tables["lang_embedding"] = gpt.lang_embedding.weight  # (lang_embedding_rows, d)
        tables["speaker_projection"] = gpt.spk_emb_proj.weight.T.contiguous()  # (style_dim, d)
        tables["speaker_projection_bias"] = gpt.spk_emb_proj.bias  # (d,)
    else:
        tables["speed_embedding"] = gpt.speed_emb.weight  # (2, d)
    np.savez(out, **{k: v.detach().float().numpy() for k, v in tables.items()})


def _tokenizer(paths: CheckpointPaths, cfg: IndexTTS2Config) -> tuple[Path, str]:
    """(the checkpoint's tokenizer file, its name in the bundle): bpe.model, or 2.5's tiktoken file."""
    path, name = (paths.tokenizer, TIKTOKEN_FILE) if cfg.is_25 else (paths.bpe, "bpe.model")
    if not path.is_file():
        flag = "--tokenizer" if cfg.is_25 else "--bpe"
        raise CheckpointError(f"{path}: file not found; the tokenizer is part of the checkpoint (or pass {flag})")
    return path, name


def _matrices(paths: CheckpointPaths, cfg: IndexTTS2Config) -> tuple[np.ndarray, np.ndarray]:
    rows = sum(cfg.emo_num)
    emo, spk = read_matrix(paths.emo_matrix), read_matrix(paths.spk_matrix)
    for path, m, width in ((paths.emo_matrix, emo, cfg.gpt.model_dim), (paths.spk_matrix, spk, cfg.s2mel.style_dim)):
        if tuple(m.shape) != (rows, width):
            raise CheckpointError(f"{path}: shape {list(m.shape)}, expected [{rows}, {width}] (sum(emo_num), width)")
    return emo.numpy(), spk.numpy()


def _versions() -> dict:
    def v(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "unknown"
    return {name: v(name) for name in ("indextts2-onnx", "torch", "onnx", "onnxscript", "onnxruntime")} | {
        "opset": OPSET}


def _plan(precision: str | dict[str, str] | None, target: str, specs: tuple[GraphSpec, ...]) -> dict[str, Precision]:
    """The precision asked of every graph: `--precision` text, or {graph: precision} items, over the target's
    defaults (both checked against each graph's policy)."""
    if isinstance(precision, dict):
        precision = ",".join(f"{graph}={prec}" for graph, prec in precision.items())
    return parse_precision(precision, target, specs)


def _lower_graphs(specs: dict[str, GraphSpec], models: Models, folder: Path, plan: dict[str, Precision],
                  target: Target, on_fail: OnFail, manifest: Manifest, progress: Progress) -> dict[str, Lowering]:
    """Replace the fp32 graphs in `folder` by their planned precision where the gates allow it.

    The GPT path goes first, from the codes upstream (`precision.PROBED_GRAPHS` of the bundle's family): the
    decoder is gated with fp32 encoders, each encoder then with the graphs nearer the codes as they ship.
    The other graphs' gates do not depend on each other; they follow in bundle order."""
    work, probe_dir = folder / ".lowering", folder / ".probe"
    probed = PROBED_GRAPHS[manifest.family]
    order = [name for name in probed if name in plan]
    order += [name for name in plan if name not in order]
    probe = None
    records = {}
    try:
        if any(specs[name].policy.probed and plan[name] != Precision.FP32 for name in plan):
            progress("greedy reference codes of the fp32 graphs, for the gates of the GPT path")
            # the probe keeps reading fp32 files that get replaced
            _copy_graphs(folder, probe_dir, probed)
            probe = GreedyProbe.build(probe_dir, folder / manifest.tables["gpt_tables"],
                                      folder / manifest.tables["tokenizer"], manifest.gpt, specs["gpt_decoder"],
                                      manifest.family)
        for name in order:
            requested = plan[name]
            if requested == Precision.FP32:
                continue
            fp32 = work / "fp32" / f"{name}.onnx"
            move_graph(folder / f"{name}.onnx", fp32)
            progress(f"lowering {name} to {requested}")
            chosen, records[name] = lower(specs[name], models, fp32, work, requested, target, on_fail,
                                          probe, progress)
            move_graph(chosen, folder / f"{name}.onnx")
            shutil.rmtree(work)
            attempts = records[name].attempts
            if probe is not None and specs[name].policy.probed and attempts and attempts[-1].passed:
                probe.accept(name, folder / f"{name}.onnx")  # a kept failure would fail every later gate
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(probe_dir, ignore_errors=True)
    return records


def _family(paths: CheckpointPaths) -> str:
    """The family of the checkpoint at `paths`, from its files (checkpoint.folder_family)."""
    return folder_family(paths.root, paths.codec, paths.tokenizer)


def decoder_layout(manifest: Manifest) -> str:
    """The KV-cache layout of a bundle's decoder (manifests before format 1.3: concat)."""
    return manifest.graphs["gpt_decoder"].kv_cache.get("layout", "concat")


def _copy_graphs(src: Path, dst: Path, names) -> None:
    """Copies of graphs and their data files in `dst` (not hard links: onnx refuses to load external data
    that has several links, and the quantizer loads the originals)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        for f in (src / f"{name}.onnx", src / f"{name}.onnx.data"):
            if f.exists():
                shutil.copyfile(f, dst / f.name)


@torch.no_grad()
def export_bundle(paths: CheckpointPaths, out: Path, force: bool = False,
                  progress: Progress = lambda msg: None, target: str = "any",
                  precision: str | dict[str, str] | None = None, on_fail: str = "fallback",
                  decoder: str = DEFAULT_DECODER, emotion_text: bool = True) -> Manifest:
    """Export every component of the checkpoint at `paths` to the bundle folder `out`.

    target   : any (every graph fp32), cpu or cuda: sets each graph's default precision (GraphSpec.policy)
    precision: `--precision` text or a {graph: precision} plan overriding the target's defaults
    on_fail  : what a failed precision gate does: fallback (to the next higher precision), error (--strict)
               or keep (ship it anyway, marked failed in the manifest: benchmarks on random weights only)
    decoder  : the decoder's KV-cache layout (graphs.DECODERS): shared (GroupQueryAttention over in-place
               buffers) or concat (the first-generation graph; every runtime version runs it)
    emotion_text: export the emotion-from-text model where the checkpoint has it (False: leave it out)"""
    out = Path(out)
    check_out(out, force)
    cfg = load_config(paths.config, _family(paths))
    folder = read_emotion_folder(paths.qwen_emo) if emotion_text and paths.qwen_emo.is_dir() else None
    specs = bundle_graphs(cfg, decoder, folder.config if folder else None)  # refuses an unknown layout
    plan = _plan(precision, target, specs)  # checks the target too
    target, on_fail = Target(target), check_on_fail(on_fail)
    emotion = emotion_entry(folder, EMOTION_TEXT_GRAPH, paths.qwen_emo.name) if folder else None
    models = load_models(paths, cfg, progress, emotion_text=folder is not None)
    emo, spk = _matrices(paths, cfg)
    tokenizer, tokenizer_name = _tokenizer(paths, cfg)
    with staged_folder(out, force) as tmp:
        graphs = {}
        for spec in specs:
            t0 = time.perf_counter()
            progress(f"exporting {spec.name}")
            path = export_graph(spec, models, tmp)
            progress(f"checking {spec.name} against torch")
            parity = check_parity(spec, models, path)
            progress(f"{spec.name}: max |onnx - torch| {parity.max_abs_diff:.2e} (atol {spec.atol}), "
                     f"{time.perf_counter() - t0:.1f} s")
            graphs[spec.name] = GraphEntry(file=path.name, inputs=list(spec.inputs), outputs=list(spec.outputs),
                                           parity=parity.to_dict(), kv_cache=dict(spec.kv_cache),
                                           roles=dict(spec.roles))
        _write_tables(models.gpt, tmp / "gpt_tables.npz")
        mel = cfg.s2mel.mel  # fmax None (config "None") means sr / 2, as upstream
        np.save(tmp / "mel_filterbank.npy", slaney_mel_filterbank(mel.sample_rate, mel.n_fft, mel.n_mels, mel.fmin, mel.fmax))
        np.save(tmp / "emotion_matrix.npy", emo)
        np.save(tmp / "speaker_matrix.npy", spk)
        shutil.copyfile(tokenizer, tmp / tokenizer_name)
        if folder is not None:
            shutil.copyfile(folder.tokenizer, tmp / BUNDLE_TOKENIZER)
        acoustic = acoustic_dims(models)
        models = Models(cfg)  # the gates below only size their inputs from the config: free the torch modules
        manifest = Manifest(
            format_version=FORMAT_VERSION, gpt=gpt_dims(cfg), acoustic=acoustic, emo_num=list(cfg.emo_num),
            graphs=graphs, files={}, target=Target.ANY.value, family=cfg.family,
            tables={"gpt_tables": "gpt_tables.npz", "emotion_matrix": "emotion_matrix.npy",
                    "speaker_matrix": "speaker_matrix.npy", "tokenizer": tokenizer_name,
                    "mel_filterbank": "mel_filterbank.npy"},
            exporter=_versions(),
            config=cfg.raw,
            emotion_text=emotion,
        )
        manifest = _finish(tmp, manifest, models, plan, target, on_fail, progress)
    progress(f"wrote {out}")
    return manifest


def _finish(folder: Path, manifest: Manifest, models: Models, plan: dict[str, Precision], target: Target,
            on_fail: OnFail, progress: Progress) -> Manifest:
    """Lower the fp32 graphs in `folder` as planned, then write the manifest with every file's checksum
    (the enums as their plain strings)."""
    specs = {spec.name: spec for spec in bundle_graphs(models.cfg, decoder_layout(manifest), emotion_config(manifest))}
    records = _lower_graphs(specs, models, folder, plan, target, on_fail, manifest, progress)
    graphs = dict(manifest.graphs)
    for name, rec in records.items():
        graphs[name] = replace(graphs[name], precision=rec.chosen.value, device=DEVICE[rec.chosen].value,
                               gate=rec.to_dict())
    files = {p.name: FileEntry(size=p.stat().st_size, sha256=sha256(p))
             for p in sorted(folder.iterdir()) if p.name != MANIFEST}
    manifest = replace(manifest, graphs=graphs, files=files, target=target.value, format_version=FORMAT_VERSION)
    (folder / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=1), encoding="utf-8")
    return manifest


@torch.no_grad()
def lower_bundle(paths: CheckpointPaths, source: Path, out: Path, target: str,
                 precision: str | dict[str, str] | None = None, on_fail: str = "fallback", force: bool = False,
                 progress: Progress = lambda msg: None) -> Manifest:
    """A cpu or cuda bundle from an fp32 bundle already exported from this checkpoint, without tracing again
    (the full-size export traces for minutes; lowering and gating takes a fraction of that).

    The source must be an untouched fp32 bundle (target "any", checksums intact); of the checkpoint folder
    only config.yaml is read: the gates compare graphs with graphs and size their inputs from it."""
    source, out = Path(source), Path(out)
    src = load_manifest(source)
    if src.target != Target.ANY or any(g.precision != Precision.FP32 for g in src.graphs.values()):
        raise ValueError(f"{source}: lowering starts from an fp32 bundle (target any); this one is {src.target}")
    bad = verify_checksums(source, src)
    if bad:
        raise ValueError(f"{source}: files changed since export ({', '.join(bad)}); re-export it")
    cfg = load_config(paths.config, src.family)
    plan = _plan(precision, target, bundle_graphs(cfg, decoder_layout(src), emotion_config(src)))  # checks the target too
    target, on_fail = Target(target), check_on_fail(on_fail)
    if cfg.raw != src.config:
        raise ValueError(f"{source}: exported from a checkpoint with another config.yaml than {paths.config}")
    models = Models(cfg)  # no torch modules: graphs are gated against the source's fp32 graphs
    with staged_folder(out, force) as tmp:
        for name in src.files:
            shutil.copyfile(source / name, tmp / name)
        manifest = _finish(tmp, src, models, plan, target, on_fail, progress)
    progress(f"wrote {out}")
    return manifest
