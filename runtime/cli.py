"""`indextts2-onnx`: the command line. The only module that reads argv.

    indextts2-onnx export CKPT --out BUNDLE      official checkpoint folder -> bundle (needs [export])
    indextts2-onnx verify CKPT BUNDLE            every graph of the bundle against torch (needs [export])
    indextts2-onnx info BUNDLE [--check]         what a bundle holds; --check verifies every sha256
    indextts2-onnx synth --bundle B --text T --speaker WAV --out OUT.wav   text to speech
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path
from types import SimpleNamespace

from .errors import IndexTTS2Error
from .manifest import load_manifest, verify_checksums


# export's per-file overrides: option -> what it points at (defaults: the official folder layout)
PATH_OPTIONS = (
    ("config", "config.yaml"), ("gpt", "gpt.pth"), ("s2mel", "s2mel.pth"), ("bpe", "bpe.model"),
    ("w2v-stats", "wav2vec2bert_stats.pt"), ("emo-matrix", "feat2.pt"), ("spk-matrix", "feat1.pt"),
    ("w2v-bert", "the w2v-bert-2.0 folder (config.json, model.safetensors)"),
    ("semantic-codec", "semantic_codec_model.safetensors"), ("campplus", "campplus_cn_common.bin"),
    ("bigvgan", "the BigVGAN folder (config.json, bigvgan_generator.pt)"),
)


def _export_side(verbose: bool) -> SimpleNamespace | None:
    """The export package's modules, or None after printing why they cannot be imported. They need torch,
    so only the commands that use them import them (the runtime itself never does)."""
    names = ("bundle", "checkpoint", "config", "graphs", "verify")
    try:
        ex = SimpleNamespace(**{n: importlib.import_module(f"indextts2_onnx.export.{n}") for n in names})
    except ImportError as e:
        print(f"error: {e}", file=sys.stderr)
        return None
    if not verbose:  # the exporter logs a line per unavailable op library
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    return ex


def _export(args: argparse.Namespace) -> int:
    ex = _export_side(args.verbose)
    if ex is None:
        return 2
    overrides = {name.replace("-", "_"): getattr(args, name.replace("-", "_")) for name, _ in PATH_OPTIONS}
    try:
        cfg = ex.config.load_config(overrides["config"] or Path(args.checkpoint) / "config.yaml")
        paths = ex.checkpoint.CheckpointPaths.of(args.checkpoint, cfg, **overrides)
        ex.bundle.export_bundle(paths, Path(args.out), force=args.force, progress=lambda m: print(m, flush=True))
    except (ex.config.ConfigError, ex.checkpoint.CheckpointError, ex.verify.ParityError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _verify(args: argparse.Namespace) -> int:
    """Re-run every graph's parity check against the checkpoint's torch modules (for CI pipelines)."""
    ex = _export_side(args.verbose)
    if ex is None:
        return 2
    bundle = Path(args.bundle)
    manifest = load_manifest(bundle)
    bad = verify_checksums(bundle, manifest)
    if bad:
        print(f"FAIL checksums: {', '.join(bad)}", file=sys.stderr)
        return 1
    try:
        cfg = ex.config.load_config(Path(args.checkpoint) / "config.yaml")
        models = ex.bundle.load_models(ex.checkpoint.CheckpointPaths.of(args.checkpoint, cfg), cfg, lambda m: None)
    except (ex.config.ConfigError, ex.checkpoint.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    failed = 0
    for spec in ex.graphs.all_graphs(cfg):
        entry = manifest.graphs.get(spec.name)
        if entry is None:
            print(f"FAIL {spec.name}: not in the bundle")
            failed += 1
            continue
        try:
            parity = ex.verify.check_parity(spec, models, bundle / entry.file)
            print(f"ok   {spec.name}: max |onnx - torch| {parity.max_abs_diff:.2e} (atol {spec.atol})")
        except ex.verify.ParityError as e:
            print(f"FAIL {e}")
            failed += 1
    print(f"{len(manifest.graphs) - failed} of {len(manifest.graphs)} graphs match the checkpoint")
    return 1 if failed else 0


def _emotion_vector(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError as e:
        raise IndexTTS2Error(f"--emotion-vector {text!r}: expected 8 comma-separated numbers") from e


def _synth(args: argparse.Namespace) -> int:
    from .audio import write_wav
    from .pipeline import IndexTTS2, join_segments

    if args.text_file:
        try:
            text = Path(args.text_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            print(f"error: --text-file {args.text_file}: cannot read it ({e})", file=sys.stderr)
            return 1
    else:
        text = args.text
    tts = IndexTTS2(args.bundle, device=args.device, threads=args.threads, max_text_chars=args.max_chars)
    segments = len(tts.tokenize(text))
    chunks = []
    for i, (sr, chunk) in enumerate(tts.stream(text, args.speaker, emotion_audio=args.emotion_audio,
                                               emotion_alpha=args.emotion_alpha,
                                               emotion_vector=_emotion_vector(args.emotion_vector), seed=args.seed,
                                               steps=args.steps, greedy=args.greedy, preset=args.preset), 1):
        print(f"segment {i}/{segments}: {chunk.shape[0] / sr:.2f} s", flush=True)
        chunks.append(chunk)
    wav = join_segments(chunks, sr)
    write_wav(args.out, wav, sr)
    m = tts.metrics
    print(f"wrote {args.out}: {wav.shape[0] / sr:.2f} s at {sr} Hz in {m['total_s']:.2f} s (RTF {m['rtf']:.2f}; "
          f"GPT {m['ms_per_code']:.1f} ms/code) on {', '.join(tts.providers)}")
    return 0


def _info(args: argparse.Namespace) -> int:
    bundle = Path(args.bundle)
    m = load_manifest(bundle)
    g = m.gpt
    print(f"bundle {bundle} (format {m.format_version})")
    print(f"gpt: {g.layers} layers x {g.model_dim} wide, {g.heads} heads, {g.number_mel_codes} mel codes, "
          f"{g.number_text_tokens} text tokens")
    for name, e in m.graphs.items():
        print(f"  {name:28s} {e.file:34s} {e.precision:5s} {e.device:4s} "
              f"parity {e.parity.get('max_abs_diff', float('nan')):.2e}")
    print(f"files: {len(m.files)}, {sum(f.size for f in m.files.values()) / 1e6:.1f} MB")
    if args.check:
        bad = verify_checksums(bundle, m)
        if bad:
            print(f"checksum mismatch: {', '.join(bad)}", file=sys.stderr)
            return 1
        print("all sha256 checksums match")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="indextts2-onnx", description=__doc__.split("\n\n")[0])
    p.add_argument("--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("export", help="export an official checkpoint folder to a bundle (needs [export])")
    e.add_argument("checkpoint", help="checkpoint folder (config.yaml, gpt.pth, ...)")
    e.add_argument("--out", required=True, help="bundle folder to write")
    e.add_argument("--force", action="store_true", help="replace an existing bundle")
    for name, what in PATH_OPTIONS:
        e.add_argument(f"--{name}", default=None, metavar="PATH", help=f"{what}, if not in the checkpoint folder")
    e.set_defaults(run=_export)

    v = sub.add_parser("verify", help="check every graph of a bundle against the checkpoint (needs [export])")
    v.add_argument("checkpoint", help="checkpoint folder the bundle was exported from")
    v.add_argument("bundle")
    v.set_defaults(run=_verify)

    sy = sub.add_parser("synth", help="text to speech with a bundle (runtime only, no torch)")
    sy.add_argument("--bundle", required=True)
    src = sy.add_mutually_exclusive_group(required=True)
    src.add_argument("--text")
    src.add_argument("--text-file", metavar="FILE", help="UTF-8 text file")
    sy.add_argument("--speaker", required=True, metavar="AUDIO", help="voice prompt (wav, flac, ogg, mp3; <= 15 s used)")
    sy.add_argument("--out", required=True, metavar="OUT.wav")
    emo = sy.add_mutually_exclusive_group()
    emo.add_argument("--emotion-audio", metavar="AUDIO", help="emotion prompt (default: the speaker prompt)")
    emo.add_argument("--emotion-vector", metavar="V1,...,V8",
                     help="happy,angry,sad,afraid,disgusted,melancholic,surprised,calm weights")
    sy.add_argument("--emotion-alpha", type=float, default=1.0)
    sy.add_argument("--seed", type=int, default=None)
    sy.add_argument("--greedy", action="store_true", help="greedy code generation instead of beam sampling")
    sy.add_argument("--steps", type=int, default=None, help="flow-matching steps (preset default: 25)")
    sy.add_argument("--preset", default="default", help="default (upstream), fast or high_quality")
    sy.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    sy.add_argument("--threads", type=int, default=None)
    sy.add_argument("--max-chars", type=int, default=5000, help="longest text accepted (default 5000)")
    sy.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help="log debug messages")
    sy.set_defaults(run=_synth)

    i = sub.add_parser("info", help="describe a bundle")
    i.add_argument("bundle")
    i.add_argument("--check", action="store_true", help="verify every file's sha256")
    i.set_defaults(run=_info)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.run(args)
    except IndexTTS2Error as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
