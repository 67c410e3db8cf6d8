"""`indextts2-onnx`: the command line. The only module that reads argv.

    indextts2-onnx export CKPT --out BUNDLE      official checkpoint folder -> bundle (needs [export])
    indextts2-onnx verify CKPT BUNDLE            every graph of the bundle against torch (needs [export])
    indextts2-onnx info BUNDLE [--check]         what a bundle holds; --check verifies every sha256
    indextts2-onnx synth --bundle B --text T --speaker WAV --out OUT.wav   text to speech
    indextts2-onnx bench --checkpoint CKPT --bundle [NAME=]B --json OUT.json   bundles vs the torch reference
    indextts2-onnx serve --bundle B [--port 8000] [--voices DIR]   OpenAI-compatible speech server ([serve])
    indextts2-onnx serve --ray --bundle B [--replicas N]           the same app on Ray Serve ([ray])
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from pathlib import Path
from types import SimpleNamespace

from .errors import BundleError, IndexTTS2Error, InputError
from .integrity import check_bundle_files
from .manifest import checksum_error, load_manifest


# export's per-file overrides: option -> what it points at (defaults: the official folder layout)
PATH_OPTIONS = (
    ("config", "config.yaml"), ("gpt", "gpt.pth"), ("s2mel", "s2mel.pth"), ("bpe", "bpe.model"),
    ("w2v-stats", "wav2vec2bert_stats.pt"), ("emo-matrix", "feat2.pt"), ("spk-matrix", "feat1.pt"),
    ("w2v-bert", "the w2v-bert-2.0 folder (config.json, model.safetensors)"),
    ("semantic-codec", "semantic_codec_model.safetensors"), ("campplus", "campplus_cn_common.bin"),
    ("bigvgan", "the BigVGAN folder (config.json, bigvgan_generator.pt)"),
    ("codec", "codec.pth (IndexTTS-2.5)"), ("tokenizer", "multilingual_zh_ja_yue_char_del.tiktoken (IndexTTS-2.5)"),
    ("qwen-emo", "the emotion-from-text model folder (config.yaml's qwen_emo_path, qwen0.6bemo4-merge/)"),
)


def _export_side(verbose: bool) -> SimpleNamespace | None:
    """The export package's modules, or None after printing why they cannot be imported. They need torch,
    so only the commands that use them import them (the runtime itself never does)."""
    names = ("bundle", "checkpoint", "config", "graphs", "quantize", "verify")
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
        # the family (IndexTTS-2 or 2.5) is what the folder holds, never what config.yaml says
        family = ex.checkpoint.folder_family(args.checkpoint, overrides["codec"], overrides["tokenizer"])
        cfg = ex.config.load_config(overrides["config"] or Path(args.checkpoint) / "config.yaml", family)
        paths = ex.checkpoint.CheckpointPaths.of(args.checkpoint, cfg, **overrides)
        on_fail = "error" if args.strict else "keep" if args.keep_failed else "fallback"
        progress = lambda m: print(m, flush=True)  # noqa: E731
        if args.from_bundle:
            if args.target == "any":
                print("error: --from-bundle lowers an fp32 bundle: give --target cpu or cuda", file=sys.stderr)
                return 2
            ex.bundle.lower_bundle(paths, Path(args.from_bundle), Path(args.out), args.target, args.precision,
                                   on_fail, force=args.force, progress=progress)
        else:
            ex.bundle.export_bundle(paths, Path(args.out), force=args.force, progress=progress, target=args.target,
                                    precision=args.precision, on_fail=on_fail, decoder=args.decoder,
                                    emotion_text=not args.no_qwen_emo)
    except (ex.config.ConfigError, ex.checkpoint.CheckpointError, ex.verify.ParityError, FileExistsError,
            ValueError, BundleError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _verify(args: argparse.Namespace) -> int:
    """Re-run every graph's parity check against the checkpoint's torch modules (for CI pipelines).

    fp32 graphs must match within their export tolerance; lowered graphs (fp16/int8/int4) their precision
    gate's metric and threshold, measured against torch instead of the fp32 graph."""
    ex = _export_side(args.verbose)
    if ex is None:
        return 2
    bundle = Path(args.bundle)
    manifest = load_manifest(bundle)
    bad = check_bundle_files(bundle, manifest)
    if bad:
        print(f"FAIL checksums: {', '.join(bad)}", file=sys.stderr)
        return 1
    try:
        cfg = ex.config.load_config(Path(args.checkpoint) / "config.yaml")
        models = ex.bundle.load_models(ex.checkpoint.CheckpointPaths.of(args.checkpoint, cfg), cfg, lambda m: None,
                                       emotion_text=manifest.emotion_text is not None)
    except (ex.config.ConfigError, ex.checkpoint.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    failed = 0
    if cfg.family != manifest.family:
        print(f"error: {args.checkpoint} is an IndexTTS {cfg.family} checkpoint, {bundle} a {manifest.family} bundle",
              file=sys.stderr)
        return 1
    for spec in ex.bundle.bundle_graphs(cfg, ex.bundle.decoder_layout(manifest), ex.bundle.emotion_config(manifest)):
        entry = manifest.graphs.get(spec.name)
        if entry is None:
            print(f"FAIL {spec.name}: not in the bundle")
            failed += 1
            continue
        if spec.name == ex.graphs.EMOTION_TEXT_GRAPH and models.qwen is None:
            print(f"FAIL {spec.name}: the checkpoint has no emotion model folder to check it against")
            failed += 1
            continue
        if entry.precision != "fp32":  # a lowered graph is held to its precision gate, against torch
            results = ex.quantize.gate_graph(spec, models, None, bundle / entry.file, entry.precision)
            ok = all(r.passed for r in results)
            print(f"{'ok  ' if ok else 'FAIL'} {spec.name} ({entry.precision}): " + ", ".join(
                f"{r.metric} {r.value:.4g} (limit {r.threshold:g})" for r in results))
            failed += not ok
            continue
        try:
            parity = ex.verify.check_parity(spec, models, bundle / entry.file)
            print(f"ok   {spec.name}: max |onnx - torch| {parity.max_abs_diff:.2e} (atol {spec.atol})")
        except ex.verify.ParityError as e:
            print(f"FAIL {e}")
            failed += 1
    print(f"{len(manifest.graphs) - failed} of {len(manifest.graphs)} graphs match the checkpoint")
    return 1 if failed else 0


def _emotion_vector(text: str) -> list[float]:
    """--emotion-vector's argparse type: comma-separated numbers (anything else is a usage error, exit 2;
    the count and the values are checked by the runtime: bad input, exit 1)."""
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 8 comma-separated numbers") from None


def _read_text(args: argparse.Namespace) -> str:
    """--text, or the UTF-8 contents of --text-file."""
    if not args.text_file:
        return args.text
    try:
        return Path(args.text_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"--text-file {args.text_file}: cannot read it ({e})", "pass a UTF-8 text file") from e


def _synth(args: argparse.Namespace) -> int:
    """Text to speech. Everything that can be checked without the model is checked first (the output
    path, every option's range, the emotion inputs), so bad input fails in a second, before the bundle
    loads. Without --stream each segment is decoded whole and the WAV written once, atomically; with
    --stream chunks are written as they come (into the temporary WAV, whose header is fixed when it is
    renamed into place; or as raw 16-bit PCM to stdout with --out -)."""
    import soundfile as sf

    from .audio import atomic_write, check_output_path, to_int16
    from .emotion_answer import EMOTIONS_EN as EMOTION_NAMES
    from .options import SynthesisOptions
    from .pipeline import IndexTTS2

    to_stdout = args.out == "-"
    if to_stdout and not args.stream:
        raise InputError("--out - (raw PCM on stdout) needs --stream", "add --stream, or give a file name")
    if not to_stdout:
        check_output_path(args.out)
    text = _read_text(args)
    # every option within presets.LIMITS; max_codes' upper bound, the checkpoint's, is checked once loaded
    options = SynthesisOptions(
        preset=args.preset, greedy=args.greedy, num_beams=args.beams, top_k=args.top_k, top_p=args.top_p,
        temperature=args.temperature, repetition_penalty=args.repetition_penalty, max_codes=args.max_codes,
        steps=args.steps, cfg_rate=args.cfg_rate, seed=args.seed, emotion_audio=args.emotion_audio,
        emotion_alpha=args.emotion_alpha, emotion_vector=args.emotion_vector, chunked=args.stream, lang=args.lang,
        duration_factor=args.duration_factor, use_emotion_text=bool(args.emotion_text or args.emotion_from_text),
        emotion_text=args.emotion_text)
    # the emotion model (2.4 GB at fp32) is loaded only when this call reads an emotion from text
    tts = IndexTTS2(args.bundle, device=args.device, threads=args.threads, max_text_chars=args.max_chars,
                    verify=not args.no_verify, emotion_text=options.use_emotion_text)
    log = sys.stderr if to_stdout else sys.stdout
    if options.use_emotion_text:  # read here rather than inside synthesize, so that it can be shown
        emotion = tts.emotion_from_text(options.emotion_text or text, seed=options.seed)
        weights = ", ".join(f"{name} {w:.2f}" for name, w in zip(EMOTION_NAMES, emotion.vector) if w)
        print(f"emotion from text: {weights}{'' if emotion.parsed else ' (answer not parsed: calm)'}; "
              f"answer {emotion.raw[:120]!r}", file=log, flush=True)
        options = options.with_overrides(use_emotion_text=False, emotion_text=None, emotion_vector=emotion.vector)
    last = []

    def chunks():
        for chunk in tts.stream(text, args.speaker, options):
            label = f"chunk {chunk.index + 1}, segment" if args.stream else "segment"
            print(f"{label} {chunk.segment + 1}: {chunk.audio.shape[0] / chunk.sample_rate:.2f} s",
                  file=log, flush=True)
            last[:] = [chunk]
            yield to_int16(chunk.audio)

    sr = tts.manifest.acoustic.sample_rate
    if to_stdout:
        for pcm in chunks():
            sys.stdout.buffer.write(pcm.astype("<i2").tobytes())
            sys.stdout.buffer.flush()
    else:
        def write(f) -> None:
            with sf.SoundFile(f, "w", samplerate=sr, channels=1, subtype="PCM_16", format="WAV") as out:
                for pcm in chunks():
                    out.write(pcm)
                    f.flush()

        atomic_write(args.out, write, "WAV file")
    m = last[0].metrics
    print(f"wrote {args.out if not to_stdout else 'stdout'}: {m.audio_s:.2f} s at {sr} Hz in {m.total_s:.2f} s "
          f"(RTF {m.rtf:.2f}; GPT {m.ms_per_code:.1f} ms/code; first audio after {m.ttfa_s:.2f} s) on "
          f"{', '.join(tts.providers)}", file=log)
    return 0


def _gate_note(gate: dict) -> str:
    """One phrase on how a graph got its precision (empty for a plain fp32 graph)."""
    if not gate:
        return ""
    failed = [a["precision"] for a in gate["attempts"] if not a["passed"]]
    if gate["chosen"] in failed:
        return "  gate FAILED, kept anyway (--keep-failed)"
    if failed:
        return f"  asked {gate['requested']}: {', '.join(failed)} failed the gate"
    return "  gate passed"


def _info(args: argparse.Namespace) -> int:
    bundle = Path(args.bundle)
    m = load_manifest(bundle)
    g = m.gpt
    from .family import FAMILIES

    print(f"bundle {bundle} (format {m.format_version}, target {m.target}): {FAMILIES[m.family].title}")
    layout = m.graphs["gpt_decoder"].kv_cache.get("layout", "concat") if "gpt_decoder" in m.graphs else "n/a"
    print(f"gpt: {g.layers} layers x {g.model_dim} wide, {g.heads} heads, {g.number_mel_codes} mel codes, "
          f"{g.number_text_tokens} text tokens; decoder KV cache: {layout}")
    for name, e in m.graphs.items():
        diff = e.parity.get("max_abs_diff")  # parity and gate are free-form export records: shown, not trusted
        parity = f"{diff:.2e}" if isinstance(diff, (int, float)) and not isinstance(diff, bool) else "n/a"
        try:
            note = _gate_note(e.gate)
        except (KeyError, TypeError, AttributeError):
            note = "  gate record unreadable"
        print(f"  {name:28s} {e.file:34s} {e.precision:5s} {e.device:4s} parity {parity}{note}")
    e = m.emotion_text
    if e is None:
        print("emotion from text: unavailable (the checkpoint had no emotion model folder)")
    else:
        decoding = (f"sampling (temperature {e.temperature:g}, top_k {e.top_k}, top_p {e.top_p:g})" if e.do_sample
                    else "greedy")
        print(f"emotion from text: {e.graph} from {e.source}, {e.layers} layers, {decoding}")
    print(f"files: {len(m.files)}, {sum(f.size for f in m.files.values()) / 1e6:.1f} MB")
    if args.check:  # the same path-safe checks as loading: only listed files inside the bundle are read
        bad = check_bundle_files(bundle, m)
        if bad:
            raise checksum_error(bundle, bad)
        print("all sha256 checksums match")
    return 0


def _bench(args: argparse.Namespace) -> int:
    """Each bundle and the torch reference (unless --no-torch), the same work, one child process each. The
    benchmark is its own package (`indextts2_onnx.bench`), imported only here: the runtime needs none of it."""
    from indextts2_onnx.bench import TORCH, Variant, Workload, parse_bundle, run_bench, write_reports

    variants = [parse_bundle(b) for b in args.bundle]
    if not args.no_torch:
        if args.checkpoint is None:
            print("error: --checkpoint is needed for the torch reference (or pass --no-torch)", file=sys.stderr)
            return 2
        variants.insert(0, Variant(TORCH, TORCH, Path(args.checkpoint)))
    workload = Workload(codes=args.codes, beams=args.beams, steps=args.steps, cfg_rate=args.cfg_rate,
                        seed=args.seed, lang=args.lang, **({"text": args.text} if args.text else {}))
    report = run_bench(variants, workload, device=args.device, threads=args.threads, repeats=args.repeats,
                       voice=args.voice, voice_seconds=args.voice_seconds,
                       progress=lambda m: print(m, file=sys.stderr, flush=True))
    print(write_reports(report, args.json, args.markdown), end="")
    return 0


def _serve(args: argparse.Namespace) -> int:
    """Run the HTTP server (uvicorn, or Ray Serve with --ray) until interrupted. The bundle loads (with
    --ray: its manifest is read), and the voices folder is made, before the port opens, so a bad bundle
    fails at once with one line. Without the extra's libraries: exit 2, naming the extra."""
    try:
        from .serve.config import ServerConfig
        if args.ray:
            from .serve.ray_app import RayOptions, run_ray
        else:
            import uvicorn

            from .serve.app import create_app
    except ImportError as e:
        extra = "ray" if args.ray else "serve"
        print(f"error: {e.name or e} is not installed: pip install 'indextts2-onnx[{extra}]'", file=sys.stderr)
        return 2
    config = ServerConfig(bundle=args.bundle, host=args.host, port=args.port, device=args.device,
                          threads=args.threads, verify=not args.no_verify, voices=args.voices,
                          workers=args.workers, max_queue=args.max_queue, batch=not args.no_batch,
                          max_chars=args.max_chars, max_upload_mb=args.max_upload_mb,
                          max_voice_seconds=args.max_voice_seconds, api_key=args.api_key, lang=args.lang,
                          emotion_text=not args.no_emotion_text)
    if args.ray:
        return run_ray(config, RayOptions.from_args(args))
    app = create_app(config)
    auth = "Bearer auth on" if config.api_key else "no auth"
    print(f"serving {args.bundle} on http://{config.host}:{config.port} ({auth}; voices in {config.voices})",
          flush=True)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning" if not args.verbose else "info")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, except that a usage error is one line on stderr (`error: ...`, exit 2), as every other
    error of the command is; subcommand parsers inherit it."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="indextts2-onnx", description=__doc__.split("\n\n")[0])
    p.add_argument("--verbose", action="store_true", help="log debug messages; print the traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("export", help="export an official checkpoint folder to a bundle (needs [export])")
    e.add_argument("checkpoint", help="checkpoint folder (config.yaml, gpt.pth, ...)")
    e.add_argument("--out", required=True, help="bundle folder to write")
    e.add_argument("--force", action="store_true", help="replace an existing bundle")
    e.add_argument("--target", default="any", choices=("any", "cpu", "cuda"),
                   help="any: every graph fp32 (default); cpu: INT8 GPT, encoders and DiT where their gates "
                        "pass; cuda: fp16 with an fp16 KV cache")
    e.add_argument("--precision", default=None, metavar="P|GRAPH=P,...",
                   help="override the target's precisions (fp32, fp16, int8, int4): a bare value for every "
                        "graph that allows it, GRAPH=P for one (e.g. gpt_decoder=int4)")
    e.add_argument("--decoder", default="shared", choices=("shared", "concat"),
                   help="the GPT decoder's KV cache: shared (default: GroupQueryAttention over buffers updated in "
                        "place, bundle format 1.3) or concat (the layout of every earlier bundle)")
    e.add_argument("--from-bundle", default=None, metavar="FP32_BUNDLE",
                   help="lower this fp32 bundle (exported from the same checkpoint) instead of tracing again")
    gate = e.add_mutually_exclusive_group()
    gate.add_argument("--strict", action="store_true",
                      help="fail when a graph misses its precision gate instead of falling back to a higher precision")
    gate.add_argument("--keep-failed", action="store_true",
                      help="ship graphs that miss their gate anyway, marked failed in the manifest "
                           "(to measure speed on random weights; not for production)")
    for name, what in PATH_OPTIONS:
        e.add_argument(f"--{name}", default=None, metavar="PATH", help=f"{what}, if not in the checkpoint folder")
    e.add_argument("--no-qwen-emo", action="store_true",
                   help="leave the emotion-from-text model out of the bundle (about 1.2 GB at fp16 less)")
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
    emo.add_argument("--emotion-vector", metavar="V1,...,V8", type=_emotion_vector,
                     help="happy,angry,sad,afraid,disgusted,melancholic,surprised,calm weights (each >= 0)")
    emo.add_argument("--emotion-text", metavar="TEXT",
                     help="read the emotion from this description with the bundle's emotion model (upstream's "
                          "emo_text), e.g. 'a little sad, tired'")
    emo.add_argument("--emotion-from-text", action="store_true",
                     help="read the emotion from the text being spoken with the bundle's emotion model "
                          "(upstream's use_emo_text)")
    sy.add_argument("--emotion-alpha", type=float, default=1.0,
                    help="emotion strength: scales --emotion-vector or the emotion read from text (clamped to "
                         "[0, 1]) or mixes toward --emotion-audio (extrapolates outside [0, 1]), as upstream")
    sy.add_argument("--lang", default=None,
                    help="the text's language: en, zh, ja, es, ar or zhen (IndexTTS-2.5 bundles need it; 2.0 "
                         "bundles speak zh/en only)")
    sy.add_argument("--duration-factor", type=float, default=1.0,
                    help="IndexTTS-2.5 only: speech length x this, 0.5..2 (default 1)")
    sy.add_argument("--seed", type=int, default=None)
    sy.add_argument("--greedy", action="store_true", help="greedy code generation instead of beam sampling")
    sy.add_argument("--steps", type=int, default=None, help="flow-matching steps, 1..1000 (preset default: 25)")
    sy.add_argument("--cfg-rate", type=float, default=None, help="classifier-free guidance rate (default 0.7)")
    sy.add_argument("--beams", type=int, default=None, help="beam-sampling beams, 1..16 (default 3)")
    sy.add_argument("--top-k", type=int, default=None, help="top-k, 0 = off (default 30)")
    sy.add_argument("--top-p", type=float, default=None, help="top-p in (0, 1], 1 = off (default 0.8)")
    sy.add_argument("--temperature", type=float, default=None, help="sampling temperature > 0 (default 0.8)")
    sy.add_argument("--repetition-penalty", type=float, default=None, help="> 0, 1 = off (default 10)")
    sy.add_argument("--max-codes", type=int, default=None,
                    help="codes per segment, 1..max_mel_tokens (default: 1500 or the checkpoint's max_mel_tokens)")
    sy.add_argument("--preset", default="default", help="default (upstream), fast or high_quality")
    sy.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    sy.add_argument("--threads", type=int, default=None, help="intra-op threads per graph, 1..256")
    sy.add_argument("--max-chars", type=int, default=5000, help="longest text accepted (default 5000)")
    sy.add_argument("--stream", action="store_true",
                    help="decode in chunks and write audio as it comes (time to first audio); --out - writes "
                         "raw 16-bit mono PCM to stdout")
    sy.add_argument("--no-verify", action="store_true",
                    help="skip the sha256 check of the bundle's files while it loads")
    sy.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                    help="log debug messages; print the traceback of an error")
    sy.set_defaults(run=_synth)

    b = sub.add_parser("bench", help="time bundles against the torch reference on the same work (torch: [export])")
    b.add_argument("--checkpoint", default=None, metavar="CKPT",
                   help="checkpoint folder for the torch reference (2.0 or 2.5: compared with bundles of its family)")
    b.add_argument("--bundle", action="append", default=[], required=True, metavar="[NAME=]PATH",
                   help="a bundle to time (repeatable, 2.0 and 2.5 may mix); NAME labels its row (default: the "
                        "folder name); the first is the baseline without torch")
    b.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    b.add_argument("--codes", type=int, default=250, help="codes per utterance, fixed (default 250)")
    b.add_argument("--beams", type=int, default=3, help="beam-sampling beams (default 3, upstream)")
    b.add_argument("--steps", type=int, default=25, help="CFM steps (default 25)")
    b.add_argument("--cfg-rate", type=float, default=0.7, help="classifier-free guidance rate (default 0.7)")
    b.add_argument("--repeats", type=int, default=1, help="timed runs per variant; medians are reported")
    b.add_argument("--threads", type=int, default=None, help="torch.set_num_threads and ONNX Runtime intra-op threads")
    b.add_argument("--no-torch", action="store_true", help="no torch reference row (runtime-only machines)")
    b.add_argument("--text", default=None, help="the text to speak; must be one segment (default: an English sentence)")
    b.add_argument("--lang", default="en",
                   help="the text's language, given to every variant: 2.5 takes en zh ja es ar zhen, 2.0 en zh zhen "
                        "(default en)")
    b.add_argument("--voice", type=Path, default=None, metavar="AUDIO", help="voice prompt (default: a synthetic one)")
    b.add_argument("--voice-seconds", type=float, default=10.0, help="length of the synthetic prompt (default 10)")
    b.add_argument("--seed", type=int, default=0, help="the call's seed: codes and CFM noise, as synth's (default 0)")
    b.add_argument("--json", type=Path, required=True, metavar="OUT.json")
    b.add_argument("--markdown", type=Path, default=None, metavar="OUT.md")
    b.set_defaults(run=_bench)

    se = sub.add_parser("serve", help="OpenAI-compatible speech server (needs [serve]; --ray needs [ray])")
    se.add_argument("--bundle", required=True)
    se.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    se.add_argument("--port", type=int, default=8000)
    se.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    se.add_argument("--threads", type=int, default=None, help="intra-op threads per graph, 1..256")
    se.add_argument("--voices", default="voices", metavar="DIR",
                    help="registered voices (created if missing; audio files there are registered at start)")
    se.add_argument("--workers", type=int, default=4, help="requests synthesized at once (default 4)")
    se.add_argument("--max-queue", type=int, default=16,
                    help="requests waiting beyond the workers; more get 429 (default 16)")
    se.add_argument("--no-batch", action="store_true",
                    help="decode each request's codes on its own worker instead of one shared batch")
    se.add_argument("--max-chars", type=int, default=4096, help="longest input text (default 4096)")
    se.add_argument("--max-upload-mb", type=float, default=10.0, help="largest voice upload (default 10)")
    se.add_argument("--max-voice-seconds", type=float, default=60.0, help="longest voice upload (default 60)")
    se.add_argument("--api-key", default=None,
                    help="require `Authorization: Bearer KEY` on every endpoint but /health "
                         "(default: $INDEXTTS2_API_KEY; none: no auth)")
    se.add_argument("--no-verify", action="store_true", help="skip the sha256 check of the bundle's files")
    se.add_argument("--lang", default=None,
                    help="language of requests without a `lang` field (IndexTTS-2.5 bundles need one of the two)")
    se.add_argument("--no-emotion-text", action="store_true",
                    help="do not load the bundle's emotion-from-text model (memory; requests using "
                         "`instructions` or `use_emotion_text` then get 400)")
    ray = se.add_argument_group("Ray Serve (--ray)")
    ray.add_argument("--ray", action="store_true", help="run as a Ray Serve application (needs [ray])")
    ray.add_argument("--replicas", type=int, default=1, help="replicas, each with its own model (default 1)")
    ray.add_argument("--max-replicas", type=int, default=None,
                     help="autoscale between --replicas and this many replicas")
    ray.add_argument("--target-ongoing-requests", type=float, default=2.0,
                     help="autoscaling target of requests per replica (default 2)")
    ray.add_argument("--max-ongoing-requests", type=int, default=None,
                     help="requests a replica takes at once (default: --workers + --max-queue)")
    ray.add_argument("--max-queued-requests", type=int, default=-1,
                     help="requests Ray queues for busy replicas before answering 503 (default -1: no limit)")
    ray.add_argument("--ray-address", default=None, help="an existing Ray cluster (default: start a local one)")
    ray.add_argument("--cpus-per-replica", type=float, default=1.0)
    ray.add_argument("--gpus-per-replica", type=float, default=0.0)
    se.set_defaults(run=_serve)

    i = sub.add_parser("info", help="describe a bundle")
    i.add_argument("bundle")
    i.add_argument("--check", action="store_true", help="verify every file's sha256")
    i.set_defaults(run=_info)
    return p


def _fail(error: BaseException, verbose: bool, prefix: str = "") -> int:
    """Report an error as one line on stderr (the traceback before it with --verbose) -> exit code 1."""
    if verbose:
        traceback.print_exception(error)
    one_line = " ".join(part.strip() for part in str(error).splitlines() if part.strip())
    print(f"error: {prefix}{one_line}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    """Run one command -> exit code: 0 done, 1 bad input or a failed run (one `error:` line on stderr;
    --verbose adds the traceback), 2 a usage error (argparse: unknown option, a number that is not one),
    130 interrupted."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed
        return e.code if isinstance(e.code, int) else 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.run(args)
    except IndexTTS2Error as e:
        return _fail(e, args.verbose)
    except (OSError, ValueError) as e:  # escaped a code path that should have named its input
        return _fail(e, args.verbose, f"{type(e).__name__}: ")
    except MemoryError as e:
        return _fail(e, args.verbose, "out of memory (try a shorter text, fewer --beams or fewer --threads) ")
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug or an ONNX Runtime failure: still one line; --verbose has the traceback
        return _fail(e, args.verbose, f"unexpected {type(e).__name__} (--verbose shows where): ")


if __name__ == "__main__":
    sys.exit(main())
