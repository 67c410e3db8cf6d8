"""The bad-input catalogue: every input the runtime refuses, through the CLI and through the API.

Each case runs `indextts2-onnx synth` (exit code, exactly one `error:` line on stderr, no traceback) and
the same request through the Python API (check_output_path -> synthesize -> write_wav; the exception
type and message); either way no output file, temporary or final, may be left. Then: the output guard
(a graph producing NaN stops with a GenerationError naming its stage), the defaults on a checkpoint with
fewer than 1500 mel positions, the unique temporary file, and the emotion_alpha behaviours kept from
upstream.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from indextts2_onnx.runtime import BundleError, GenerationError, IndexTTS2, InputError, Speaker
from indextts2_onnx.runtime import audio as audio_module
from indextts2_onnx.runtime import decoder_graph, sessions
from indextts2_onnx.runtime.audio import check_output_path, load_audio, synthetic_voice, write_wav
from indextts2_onnx.runtime.cli import main
from indextts2_onnx.runtime.manifest import sha256

TEXT = "HELLO THERE."


@pytest.fixture(scope="module")
def tts(tiny_bundle):
    return IndexTTS2(tiny_bundle)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_bundle) -> dict[str, str]:
    """Input files, good and bad, in a folder of their own (outputs go to a fresh folder per test)."""
    d = tmp_path_factory.mktemp("inputs")
    sf.write(d / "voice.wav", synthetic_voice(3.0, 44100), 44100)
    (d / "notes.wav").write_text("this is not audio\n")
    sf.write(d / "empty.wav", np.zeros(0, np.float32), 16000, subtype="PCM_16")
    sf.write(d / "silent.wav", np.zeros(22050, np.float32), 22050)
    sf.write(d / "short.wav", synthetic_voice(1.0, 22050)[:441], 22050)  # 20 ms
    (d / "junk.npz").write_bytes(b"not a zip")
    return {"voice": str(d / "voice.wav"), "missing": str(d / "nope.wav"), "unreadable": str(d / "notes.wav"),
            "empty": str(d / "empty.wav"), "silent": str(d / "silent.wav"), "short": str(d / "short.wav"),
            "junk_npz": str(d / "junk.npz"), "missing_npz": str(d / "nope.npz"),
            "missing_txt": str(d / "nope.txt"), "missing_bundle": str(d / "no_bundle"), "bundle": str(tiny_bundle)}


def speaker_arrays(style_dim: int = 48, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return dict(semantic=rng.standard_normal((1, 30, 32)), emotion_semantic=rng.standard_normal((1, 28, 32)),
                style=rng.standard_normal((1, style_dim)), ref_mel=rng.standard_normal((1, 80, 12)),
                prompt_condition=rng.standard_normal((1, 12, 32)))


def _deny(*_args, **_kwargs):
    raise PermissionError(13, "Permission denied")


@dataclass(frozen=True)
class Case:
    """One bad input. `cli` / `api` override the base request (None: the case has no such form; a None
    value drops a CLI option). Strings may name paths as {voice}, {out}, ...; an API value may be a
    function of those paths (called inside the check, so it may raise). `usage`: an argparse error,
    exit 2. `patch`: (module, attribute, value) set for the run. `ctor`: IndexTTS2 arguments."""

    id: str
    words: tuple[str, ...]
    cli: dict[str, Any] | None = None
    api: dict[str, Any] | None = None
    error: type = InputError
    usage: bool = False
    patch: tuple = ()
    ctor: dict[str, Any] = field(default_factory=dict)
    out_dir: bool = False  # --out names an existing folder


def both(id, words, cli_value: dict, api_value: dict, **kw) -> Case:
    return Case(id, tuple(words), cli=cli_value, api=api_value, **kw)


V8 = "0,0,0,0,0,0,0,{}"
CASES = [
    # ---- audio ----
    both("speaker-missing", ["nope.wav", "audio file not found"], {"--speaker": "{missing}"}, {"speaker": "{missing}"}),
    both("speaker-unreadable", ["notes.wav", "not a readable audio file"],
         {"--speaker": "{unreadable}"}, {"speaker": "{unreadable}"}),
    both("speaker-empty", ["empty.wav", "audio is empty"], {"--speaker": "{empty}"}, {"speaker": "{empty}"}),
    both("speaker-silent", ["silent.wav", "silent"], {"--speaker": "{silent}"}, {"speaker": "{silent}"}),
    both("speaker-too-short", ["short.wav", "too short"], {"--speaker": "{short}"}, {"speaker": "{short}"}),
    both("speaker-too-long", ["voice.wav", "longer than the 2 s"], {}, {},
         patch=((audio_module, "MAX_AUDIO_SECONDS", 2),)),
    both("speaker-too-big", ["voice.wav", "larger than"], {}, {}, patch=((audio_module, "MAX_AUDIO_BYTES", 4096),)),
    both("speaker-not-audio-type", ["audio", "expected a file path"], None, {"speaker": 42}),
    both("emotion-audio-missing", ["nope.wav", "audio file not found"],
         {"--emotion-audio": "{missing}"}, {"emotion_audio": "{missing}"}),
    both("emotion-audio-silent", ["emotion audio", "silent.wav", "silent"],
         {"--emotion-audio": "{silent}"}, {"emotion_audio": "{silent}"}),
    # ---- text ----
    both("text-empty", ["text is empty"], {"--text": ""}, {"text": ""}),
    both("text-whitespace", ["text is empty"], {"--text": "  \n\t "}, {"text": "  \n\t "}),
    both("text-unknown-characters", ["only characters the vocabulary does not know"],
         {"--text": "☃☃☃"}, {"text": "☃☃☃"}),
    both("text-too-long", ["more than the limit of 20"], {"--text": "A" * 30, "--max-chars": "20"},
         {"text": "A" * 30}, ctor={"max_text_chars": 20}),
    both("text-file-missing", ["--text-file", "nope.txt", "cannot read it"],
         {"--text": None, "--text-file": "{missing_txt}"}, None),
    # ---- emotion ----
    both("vector-count", ["emotion vector", "2 values, needs 8"], {"--emotion-vector": "1,2"}, {"emotion_vector": [1, 2]}),
    both("vector-nan", ["emotion vector: happy=nan", "finite number >= 0"],
         {"--emotion-vector": "nan,0,0,0,0,0,0,0"}, {"emotion_vector": [float("nan")] + [0] * 7}),
    both("vector-negative", ["emotion vector: calm=-0.5", ">= 0"],
         {"--emotion-vector": V8.format(-0.5)}, {"emotion_vector": [0] * 7 + [-0.5]}),
    both("vector-not-numbers", ["--emotion-vector", "expected 8 comma-separated numbers"],
         {"--emotion-vector": "a,b,c,d,e,f,g,h"}, None, usage=True),
    both("vector-not-numbers", ["emotion vector", "not a list of numbers"], None, {"emotion_vector": ["a"] * 8}),
    both("alpha-nan", ["emotion_alpha=nan", "finite"], {"--emotion-alpha": "nan"}, {"emotion_alpha": float("nan")}),
    both("alpha-inf", ["emotion_alpha=inf", "finite"], {"--emotion-alpha": "inf"}, {"emotion_alpha": float("inf")}),
    # ---- options ----
    both("steps-0", ["steps=0", "1..1000"], {"--steps": "0"}, {"steps": 0}),
    both("steps-huge", ["steps=1001", "1..1000"], {"--steps": "1001"}, {"steps": 1001}),
    both("steps-float", ["steps=2.5", "integer"], None, {"steps": 2.5}),
    both("steps-not-a-number", ["--steps", "invalid int value"], {"--steps": "abc"}, None, usage=True),
    both("beams-0", ["num_beams=0", "1..16"], {"--beams": "0"}, {"num_beams": 0}),
    both("beams-huge", ["num_beams=17", "1..16"], {"--beams": "17"}, {"num_beams": 17}),
    both("threads-0", ["threads=0", "1..256"], {"--threads": "0"}, {}, ctor={"threads": 0}),
    both("max-codes-0", ["max_codes=0", "must be an integer"], {"--max-codes": "0"}, {"max_codes": 0}),
    both("max-codes-too-big", ["max_codes=100000", "max_mel_tokens"],
         {"--max-codes": "100000"}, {"max_codes": 100000}),
    both("top-p-0", ["top_p=0.0", "(0, 1]"], {"--top-p": "0"}, {"top_p": 0.0}),
    both("top-p-1.5", ["top_p=1.5", "(0, 1]"], {"--top-p": "1.5"}, {"top_p": 1.5}),
    both("top-k-negative", ["top_k=-1", ">= 0"], {"--top-k": "-1"}, {"top_k": -1}),
    both("temperature-0", ["temperature=0.0", "> 0"], {"--temperature": "0"}, {"temperature": 0.0}),
    both("temperature-nan", ["temperature=nan", "finite"], {"--temperature": "nan"}, {"temperature": float("nan")}),
    both("repetition-penalty-0", ["repetition_penalty=0.0", "> 0"],
         {"--repetition-penalty": "0"}, {"repetition_penalty": 0.0}),
    both("cfg-rate-negative", ["cfg_rate=-1.0", ">= 0"], {"--cfg-rate": "-1"}, {"cfg_rate": -1.0}),
    both("seed-negative", ["seed=-1", ">= 0"], {"--seed": "-1"}, {"seed": -1}),
    both("greedy-not-bool", ["greedy must be a bool"], None, {"greedy": "yes"}),
    both("preset-unknown", ["preset 'turbo' does not exist"], {"--preset": "turbo"}, {"preset": "turbo"}),
    both("device-unknown", ["--device", "invalid choice"], {"--device": "tpu"}, None, usage=True),
    both("device-unknown", ["device 'tpu' is not supported"], None, {}, ctor={"device": "tpu"}),
    both("option-unknown", ["unrecognized arguments", "--turbo"], {"--turbo": "1"}, None, usage=True),
    # ---- output ----
    both("out-folder-missing", ["does not exist"], {"--out": "{outdir}/missing/out.wav"},
         {"out": "{outdir}/missing/out.wav"}),
    both("out-is-a-folder", ["is a folder"], {"--out": "{outdir}/adir"}, {"out": "{outdir}/adir"}, out_dir=True),
    both("out-under-a-file", ["is not a folder"], {"--out": "{outdir}/plain.txt/out.wav"},
         {"out": "{outdir}/plain.txt/out.wav"}),
    both("out-folder-not-writable", ["cannot write in", "Permission denied"], {}, {},
         patch=((audio_module, "_create_unique", _deny),)),
    # ---- bundle ----
    both("bundle-missing", ["no_bundle", "no such bundle folder"], {"--bundle": "{missing_bundle}"}, {},
         error=BundleError, ctor={"bundle": "{missing_bundle}"}),
    # ---- prepared speakers (API only: the CLI takes audio) ----
    both("speaker-npz-missing", ["nope.npz", "no such speaker file"], None,
         {"speaker": lambda p: Speaker.load(p["missing_npz"])}),
    both("speaker-npz-bad", ["junk.npz", "not a speaker .npz"], None,
         {"speaker": lambda p: Speaker.load(p["junk_npz"])}),
    both("speaker-wrong-dims", ["Speaker.style", "style width 7", "this bundle's is 48"], None,
         {"speaker": lambda p: Speaker(**speaker_arrays(style_dim=7))}),
    both("speaker-not-a-speaker", ["expected a Speaker"], None,
         {"speaker": lambda p: "unused", "_call": "emotion_vector"}),
]

# The output guard: a graph returning NaN -> GenerationError naming the stage that produced it.
NAN_STAGES = {
    "semantic_encoder": "speaker preparation", "gpt_speaker_conditioning": "speaker conditioning",
    "gpt_emotion_vector": "emotion vector", "gpt_decoder": "code generation", "dit": "mel decoding",
    "bigvgan": "vocoder",
}
CASES += [both(f"nan-{graph}", [f"{stage} produced NaN or infinite values"], {}, {}, error=GenerationError,
               patch=(("nan", graph),)) for graph, stage in NAN_STAGES.items()]


def _nan_run(graph_name: str):
    run = sessions.Graph.run

    def patched(self, feeds):
        out = run(self, feeds)
        if self.name != graph_name:
            return out
        return [np.full_like(o, np.nan) if np.issubdtype(o.dtype, np.floating) else o for o in out]
    return patched


def _nan_call(call):
    """The shared-buffer decoder's calls (IOBinding, not Graph.run) with NaN logits and hidden states."""
    def patched(self, *args, **kwargs):
        logits, hidden = call(self, *args, **kwargs)
        return np.full_like(logits, np.nan), None if hidden is None else np.full_like(hidden, np.nan)
    return patched


def _apply(case: Case, monkeypatch) -> None:
    for target, name, *value in case.patch:
        if target == "nan":
            monkeypatch.setattr(sessions.Graph, "run", _nan_run(name))
            if name == "gpt_decoder":
                monkeypatch.setattr(decoder_graph.SharedDecoder, "_call", _nan_call(decoder_graph.SharedDecoder._call))
        else:
            monkeypatch.setattr(target, name, value[0])


def _resolve(value, paths: dict[str, str]):
    if callable(value):
        return value(paths)
    return value.format(**paths) if isinstance(value, str) else value


def _prepare_outdir(tmp_path: Path, case: Case) -> tuple[Path, dict[str, str], set[str]]:
    outdir = tmp_path / "out"
    outdir.mkdir()
    (outdir / "plain.txt").write_text("a file, not a folder\n")
    if case.out_dir:
        (outdir / "adir").mkdir()
    return outdir, {"outdir": str(outdir), "out": str(outdir / "out.wav")}, _listing(outdir)


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


BASE_CLI = {"--bundle": "{bundle}", "--text": TEXT, "--speaker": "{voice}", "--out": "{out}", "--steps": "2",
            "--seed": "0", "--max-codes": "20"}
BASE_API = {"text": TEXT, "speaker": "{voice}", "out": "{out}", "steps": 2, "seed": 0, "max_codes": 20}


@pytest.mark.parametrize("case", [c for c in CASES if c.cli is not None], ids=lambda c: c.id)
def test_cli_refuses(case, inputs, tmp_path, monkeypatch, capsys):
    outdir, outs, before = _prepare_outdir(tmp_path, case)
    paths = inputs | outs
    argv = ["synth"]
    for flag, value in (BASE_CLI | case.cli).items():
        if value is not None:
            argv += [flag, _resolve(value, paths)]
    _apply(case, monkeypatch)
    capsys.readouterr()
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == (2 if case.usage else 1), err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err + out
    for word in case.words:
        assert word in lines[0], (word, lines[0])
    assert _listing(outdir) == before  # no output, no temporary file


@pytest.mark.parametrize("case", [c for c in CASES if c.api is not None], ids=lambda c: c.id)
def test_api_refuses(case, inputs, tts, tiny_bundle, tmp_path, monkeypatch):
    outdir, outs, before = _prepare_outdir(tmp_path, case)
    paths = inputs | outs
    _apply(case, monkeypatch)
    with pytest.raises(case.error) as info:
        kw = {k: _resolve(v, paths) for k, v in (BASE_API | case.api).items()}
        out, call = kw.pop("out"), kw.pop("_call", "synthesize")
        if call == "emotion_vector":
            tts.emotion_vector(kw["speaker"])
        check_output_path(out)
        ctor = {k: _resolve(v, paths) for k, v in case.ctor.items()}
        model = IndexTTS2(ctor.pop("bundle", tiny_bundle), **ctor) if ctor else tts
        sr, wav = model.synthesize(**kw)
        write_wav(out, wav, sr)
    for word in case.words:
        assert word in str(info.value), (word, str(info.value))
    assert _listing(outdir) == before


def test_verbose_adds_the_traceback(inputs, tmp_path, capsys):
    rc = main(["--verbose", "synth", "--bundle", inputs["bundle"], "--text", TEXT, "--speaker", inputs["short"],
               "--out", str(tmp_path / "out.wav")])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" in err
    assert err.strip().splitlines()[-1].startswith("error: ") and "short.wav" in err
    assert not (tmp_path / "out.wav").exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="permissions do not bind root")
def test_read_only_folder_is_refused_before_synthesis(inputs, tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert main(["synth", "--bundle", inputs["bundle"], "--text", TEXT, "--speaker", inputs["voice"],
                     "--out", str(folder / "out.wav")]) == 1
        assert "cannot write in" in capsys.readouterr().err
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)


# ---------------------------------------------------------------------------------- defaults


@pytest.fixture(scope="module")
def short_table_bundle(tiny_bundle, tmp_path_factory) -> Path:
    """The tiny bundle as a checkpoint with max_mel_tokens 400 would export it: the manifest and its copy
    of config.yaml say 400 and the mel position table has 400 + 3 rows (the decoder graph does not depend
    on it: the tables live outside it). Checksums are updated, so the bundle passes every check."""
    out = tmp_path_factory.mktemp("short") / "bundle"
    shutil.copytree(tiny_bundle, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["gpt"]["max_mel_tokens"] = manifest["config"]["gpt"]["max_mel_tokens"] = 400
    rel = manifest["tables"]["gpt_tables"]
    with np.load(out / rel) as z:
        tables = {k: z[k] for k in z.files}
    tables["mel_pos_embedding"] = tables["mel_pos_embedding"][: 400 + 3]
    np.savez(out / rel, **tables)
    manifest["files"][rel] = {"size": (out / rel).stat().st_size, "sha256": sha256(out / rel)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


def test_defaults_work_on_a_checkpoint_with_fewer_than_1500_mel_positions(short_table_bundle, inputs, tmp_path):
    """max_codes defaults to min(1500, max_mel_tokens): the default synth works; an explicit value past
    the table is still refused, with the table's size in the message."""
    tts = IndexTTS2(short_table_bundle)
    assert tts.manifest.gpt.max_mel_tokens == 400
    sr, wav = tts.synthesize(TEXT, inputs["voice"], seed=0, steps=2)
    assert wav.size > 0 and np.all(np.isfinite(wav))
    spk = tts.prepare_speaker(inputs["voice"])
    codes, _ = tts.generate_codes([5, 6], spk, tts.emotion_vector(spk), greedy=True, min_codes=400)
    assert codes.shape == (400,)  # the default cap is the table's 400, not 1500
    with pytest.raises(InputError, match=r"max_codes=401: must be an integer in 1\.\.400"):
        tts.generate_codes([5, 6], spk, tts.emotion_vector(spk), max_codes=401)
    out = tmp_path / "out.wav"
    assert main(["synth", "--bundle", str(short_table_bundle), "--text", TEXT, "--speaker", inputs["voice"],
                 "--out", str(out), "--seed", "0", "--steps", "2"]) == 0
    assert sf.info(out).frames > 0


# ---------------------------------------------------------------------------------- emotion_alpha


def test_emotion_alpha_keeps_upstreams_behaviour(tts, inputs):
    """Vector path: alpha clamped to [0, 1] (5 acts as 1, -3 as 0). Audio path: it extrapolates."""
    spk = tts.prepare_speaker(inputs["voice"])
    w = [0.25, 0, 0, 0, 0, 0, 0, 0.5]  # exact in 4 decimals: upstream truncates whenever alpha != 1
    np.testing.assert_array_equal(tts.emotion_vector(spk, vector=w, alpha=5.0), tts.emotion_vector(spk, vector=w))
    np.testing.assert_array_equal(tts.emotion_vector(spk, vector=w, alpha=-3.0),
                                  tts.emotion_vector(spk, vector=[0.0] * 8))
    over = [0.9, 0, 0, 0, 0, 0, 0, 0.9]  # a sum past 1 is kept, as upstream
    assert np.all(np.isfinite(tts.emotion_vector(spk, vector=over)))
    other = (np.roll(synthetic_voice(2.0, 16000), 3000), 16000)
    base = tts.emotion_vector(spk, emotion_audio=other, alpha=0.0)
    one = tts.emotion_vector(spk, emotion_audio=other, alpha=1.0)
    two = tts.emotion_vector(spk, emotion_audio=other, alpha=2.0)
    np.testing.assert_allclose(two, base + 2.0 * (one - base), rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError, match="emotion_alpha=nan"):
        tts.emotion_vector(spk, alpha=float("nan"))


# ---------------------------------------------------------------------------------- files


def test_load_audio_decodes_only_what_the_prompt_uses(tmp_path):
    """A 20 s file: 16 s are decoded, and the 15 s upstream keeps are the same as from the whole file."""
    from indextts2_onnx.runtime.audio import READ_SECONDS, emotion_waveform, speaker_waveforms

    x = synthetic_voice(20.0, 44100)
    sf.write(tmp_path / "long.flac", x, 44100, subtype="PCM_24")
    audio, sr = load_audio(tmp_path / "long.flac")
    assert sr == 44100 and audio.size == READ_SECONDS * 44100
    full, _ = load_audio(tmp_path / "long.flac", max_seconds=None)
    assert full.size == x.size
    for a, b in zip(speaker_waveforms(audio, sr), speaker_waveforms(full, sr)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(emotion_waveform(audio, sr), emotion_waveform(full, sr))


def test_write_wav_uses_a_unique_temporary_file(tmp_path, monkeypatch):
    """No fixed `.part` name: a symlink planted at the old name is neither followed nor touched, two
    writes use two temporary names, and a failed write leaves nothing."""
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep me")
    (tmp_path / "out.wav.part").symlink_to(target)
    names = []
    create = audio_module._create_unique

    def spy(folder, name):
        fd, tmp = create(folder, name)
        names.append(tmp.name)
        return fd, tmp
    monkeypatch.setattr(audio_module, "_create_unique", spy)
    write_wav(tmp_path / "out.wav", np.zeros(100, np.float32), 22050)
    write_wav(tmp_path / "out.wav", np.zeros(200, np.float32), 22050)
    assert target.read_text() == "keep me" and (tmp_path / "out.wav.part").is_symlink()
    assert sf.info(tmp_path / "out.wav").frames == 200
    assert len(set(names)) == len(names) == 4  # check_output_path's probe and the write, twice
    assert all(n.startswith("out.wav.") and n.endswith(".part") for n in names)

    def broken(*_args, **_kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(sf, "write", broken)
    before = _listing(tmp_path)
    with pytest.raises(InputError, match="out2.wav: cannot write the WAV file .*No space left"):
        write_wav(tmp_path / "out2.wav", np.zeros(100, np.float32), 22050)
    assert _listing(tmp_path) == before


def test_speaker_save_errors_are_input_errors(tmp_path):
    spk = Speaker(**speaker_arrays())
    with pytest.raises(InputError, match="missing.*does not exist"):
        spk.save(tmp_path / "missing" / "voice.npz")
    (tmp_path / "adir").mkdir()
    with pytest.raises(InputError, match="adir: is a folder"):
        spk.save(tmp_path / "adir")
    spk.save(tmp_path / "voice.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "voice.npz"]
    bad = {**speaker_arrays(), "style": np.full((1, 48), np.nan)}
    np.savez(tmp_path / "nan.npz", **bad)
    with pytest.raises(InputError, match="nan.npz: Speaker.style: contains NaN"):
        Speaker.load(tmp_path / "nan.npz")
