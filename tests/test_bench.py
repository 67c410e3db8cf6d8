"""`indextts2-onnx bench`: the torch reference does the runtime's work, and the command reports it.

* The bench's torch worker (`bench/torch_worker.py`, over `export/torch_pipeline.py`) with greedy decoding
  reproduces its runtime worker (`bench/runtime_worker.py`: one public `IndexTTS2.synthesize` call) from
  the same seed: as many codes, the same waveform, the same stages, so the bench compares the same work.
  With beam sampling and a fixed seed, both make exactly the asked-for codes.
* The CLI runs the torch reference and a bundle, each in a child process, and writes a JSON report whose
  ratios are the reported torch numbers over the variant's, and a markdown table naming the variants.
* `bench --no-torch` runs with torch made unimportable in every process (orchestrator and worker).
* A 2.0 and a 2.5 bundle run side by side: each row names its family, its audio seconds follow its own
  frame rule for the same code count, and GPT time is reported per code and per second of audio. The torch
  reference of a 2.5 checkpoint reproduces the 2.5 runtime; torch is compared only with bundles of its family.
* The runtime imports nothing of the bench package.

Tiny sizes only, and one intra-op thread (the test machine is small and shared); nothing asserts on a
timing, only that timings exist and are consistent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import asdict

import numpy as np
import pytest

from indextts2_onnx.bench import STAGES, TIME_METRICS, VOICE_SR, Workload, markdown, with_ratios
from indextts2_onnx.bench.runtime_worker import stage_seconds, synthesize
from indextts2_onnx.runtime import IndexTTS2, Metrics
from indextts2_onnx.runtime.audio import synthetic_voice, write_wav
from indextts2_onnx.runtime.cli import main
from indextts2_onnx.runtime.family import FAMILIES
from indextts2_onnx.runtime.s2mel import target_frames, target_frames_25

CODES = 24  # fixed: the stop token is banned until then
STEPS = 4


@pytest.fixture(scope="module")
def voice(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench_voice") / "voice.wav"
    write_wav(path, synthetic_voice(3.0, VOICE_SR), VOICE_SR)
    return path


@pytest.fixture(scope="module")
def sides(tiny_checkpoint, tiny_bundle, one_thread):
    pytest.importorskip("torch")
    from indextts2_onnx.export.torch_pipeline import TorchReference

    return TorchReference.load(tiny_checkpoint), IndexTTS2(tiny_bundle, threads=1)


def test_torch_reference_reproduces_the_runtime(sides, voice):
    """Greedy (argmax after the repetition penalty) from one seed: the only randomness left is the CFM
    noise, which both sides draw from the noise seed `segment_seeds` derives from `Workload.seed` (the
    runtime inside `synthesize`, the torch worker itself): another noise would move the waveform far
    beyond the tolerance.

    Codes must agree: fp32 ONNX and torch logits differ by ~1e-6 and this fixed case (seed-0 tiny weights,
    this voice and text) has no step whose top two penalised scores are that close; a different code would
    change the waveform. The waveform may differ by the fp32 noise of every stage carried through 4 Euler
    steps of the DiT with CFG and the vocoder: atol 1e-3 on samples in [-1, 1], the end-to-end test's
    tolerance."""
    from indextts2_onnx.bench.torch_worker import synthesize as torch_synthesize

    ref, tts = sides
    work = Workload(codes=CODES, steps=STEPS, greedy=True, seed=1234)
    wav, codes, timings = synthesize(tts, voice, work)
    t_wav, t_codes, t_timings = torch_synthesize(ref, voice, work)
    assert codes == t_codes == CODES
    assert t_wav.shape == wav.shape == (256 * int(CODES * 1.72),)
    np.testing.assert_allclose(t_wav, wav, atol=1e-3)
    for t in (timings, t_timings):  # the same contiguous stages on both sides, summing to the total
        assert set(t) == {*STAGES, "total_s"}
        assert all(t[s] >= 0 for s in STAGES), t
        assert sum(t[s] for s in STAGES) == pytest.approx(t["total_s"], rel=1e-9)


def test_beam_sampling_makes_exactly_the_fixed_number_of_codes(sides, voice):
    """Beams with the stop token banned: exactly CODES codes on both sides (a code the codec cannot embed
    would be an error on both: check_codebook)."""
    from indextts2_onnx.bench.torch_worker import synthesize as torch_synthesize

    ref, tts = sides
    work = Workload(codes=CODES, steps=1, beams=3, seed=7)
    assert synthesize(tts, voice, work)[1] == torch_synthesize(ref, voice, work)[1] == CODES


@pytest.fixture(scope="module")
def sides25(tiny25_checkpoint, tiny25_bundle, one_thread):
    pytest.importorskip("torch")
    from indextts2_onnx.export.torch_pipeline import TorchReference

    return TorchReference.load(tiny25_checkpoint), IndexTTS2(tiny25_bundle, threads=1)


def test_torch_reference_reproduces_the_2_5_runtime(sides25, voice):
    """The torch worker on an IndexTTS-2.5 checkpoint: the tiktoken front end in the workload's language,
    the language row in the prefix, no latent pass, the codec decoder's frames. Greedy from one seed, as
    the 2.0 test: the same codes and the waveform within the same tolerance."""
    from indextts2_onnx.bench.torch_worker import synthesize as torch_synthesize

    ref, tts = sides25
    work = Workload(codes=CODES, steps=STEPS, greedy=True, seed=1234, lang="en")
    wav, codes, timings = synthesize(tts, voice, work)
    t_wav, t_codes, t_timings = torch_synthesize(ref, voice, work)
    assert codes == t_codes == CODES
    assert t_wav.shape == wav.shape == (256 * target_frames_25(CODES),)
    np.testing.assert_allclose(t_wav, wav, atol=1e-3)
    for t in (timings, t_timings):
        assert set(t) == {*STAGES, "total_s"}
        assert sum(t[s] for s in STAGES) == pytest.approx(t["total_s"], rel=1e-9)


def test_runtime_stages_are_the_metrics_and_the_rest_is_text():
    m = Metrics(prompt_s=0.5, conditioning_s=0.25, decode_s=2.0, latent_s=0.125, mel_s=1.0, vocoder_s=0.5,
                total_s=4.0, codes=10)
    t = stage_seconds(m, 4.5)
    assert list(t) == [*STAGES, "total_s"]
    assert t["text_s"] == 4.5 - 4.375 and t["total_s"] == 4.5
    assert all(t[s] == getattr(m, s) for s in STAGES[1:])


def test_cli_bench_writes_json_and_markdown(tiny_checkpoint, tiny_bundle, tmp_path, capsys):
    pytest.importorskip("torch")
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    rc = main(["bench", "--checkpoint", str(tiny_checkpoint), "--bundle", f"fp32={tiny_bundle}", "--codes", "8",
               "--steps", "2", "--beams", "2", "--repeats", "1", "--threads", "1", "--voice-seconds", "3",
               "--json", str(out), "--markdown", str(md)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["workload"]["codes"] == 8 and report["workload"]["beams"] == 2
    assert report["workload"]["steps"] == 2 and report["repeats"] == 1 and report["threads"] == 1
    assert report["versions"]["torch"] and report["versions"]["onnxruntime"] and report["cpu_count"] >= 1
    ref, row = report["variants"]
    assert (ref["variant"], ref["kind"], row["variant"], row["kind"]) == ("torch", "torch", "fp32", "runtime")
    assert report["baseline"] == "torch" and ref["family"] == row["family"] == "2.0"
    for r in (ref, row):
        assert r["median"]["codes"] == 8
        for key in (*TIME_METRICS, "audio_s"):
            assert r["median"][key] > 0, (r["variant"], key)
        assert r["load_s"] > 0 and r["peak_rss_mib"] > 0 and r["size_mib"] > 0
        assert r["peak_gpu_mib"] is None  # CPU run
        assert len(r["runs"]) == 1
    assert ref["median"]["ttfa_s"] == ref["median"]["total_s"]  # torch does not stream
    assert 0 < row["median"]["ttfa_s"] <= row["median"]["stream_total_s"]  # the bundle's TTFA: stream()'s
    assert "stream_total_s" not in ref["median"]
    assert row["providers"] == ["CPUExecutionProvider"]
    assert set(row["precision"].values()) == {"fp32"} and len(row["precision"]) == 11  # + qwen_emotion
    speedup = row["vs_baseline"]["speedup"]
    for key in TIME_METRICS:
        assert speedup[key] == pytest.approx(ref["median"][key] / row["median"][key], rel=1e-12), key
    assert speedup["load_s"] == pytest.approx(ref["load_s"] / row["load_s"], rel=1e-12)
    assert row["vs_baseline"]["peak_rss_ratio"] == pytest.approx(row["peak_rss_mib"] / ref["peak_rss_mib"])
    assert all(v == 1.0 for v in ref["vs_baseline"]["speedup"].values())
    table = md.read_text()
    assert "| torch |" in table and "| fp32 |" in table and f"{speedup['total_s']:.2f}x" in table
    assert table in capsys.readouterr().out


def test_bench_without_torch(tiny_bundle, tmp_path):
    """--no-torch with torch unimportable in every process: a sitecustomize on PYTHONPATH blocks it."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent("""
        import sys
        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "torch":
                    raise ImportError("torch imported: " + name)
        sys.meta_path.insert(0, NoTorch())
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "indextts2_onnx.runtime.cli", "bench", "--no-torch", "--bundle",
                          str(tiny_bundle), "--codes", "4", "--steps", "1", "--beams", "2", "--threads", "1",
                          "--voice-seconds", "2", "--json", str(out)], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text())
    (row,) = report["variants"]
    assert row["variant"] == report["baseline"] == tiny_bundle.name and row["median"]["codes"] == 4
    assert all(v == 1.0 for v in row["vs_baseline"]["speedup"].values())  # the baseline: the first bundle


def audio_seconds(family: str, codes: int) -> float:
    """The runtime's output length for `codes` codes: its family's frame rule, 256 samples a frame at 22.05 kHz."""
    frames = target_frames_25(codes) if family == "2.5" else target_frames(codes)
    return frames * 256 / 22050


def test_bench_runs_a_2_0_and_a_2_5_bundle_side_by_side(tiny_bundle, tiny25_bundle, tmp_path, capsys):
    """One run, both families, the same code count: a 2.5 code is 40 ms of audio, a 2.0 code 20 ms, so each
    row's audio seconds follow its own frame rule, and GPT time per code and per audio second both follow
    from its decode time. Without torch the first bundle is the baseline, and the report says the rows of
    the other family are another model."""
    codes = 12
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    rc = main(["bench", "--no-torch", "--bundle", f"v20={tiny_bundle}", "--bundle", f"v25={tiny25_bundle}",
               "--codes", str(codes), "--steps", "2", "--beams", "2", "--threads", "1", "--voice-seconds", "3",
               "--json", str(out), "--markdown", str(md)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["workload"]["lang"] == "en" and report["baseline"] == "v20"
    v20, v25 = report["variants"]
    assert [(r["variant"], r["family"]) for r in (v20, v25)] == [("v20", "2.0"), ("v25", "2.5")]
    for r in (v20, v25):
        cps = FAMILIES[r["family"]].codes_per_second
        assert r["codes_per_second"] == cps
        (run,) = r["runs"]
        assert r["median"] == run  # one timed run: its medians are its values
        assert run["codes"] == codes
        assert run["audio_s"] == pytest.approx(audio_seconds(r["family"], codes), rel=1e-12)
        # codes / codes_per_second up to the frame rule: 1.72 frames of 256 samples (19.97 ms) per 20 ms, then int
        assert abs(run["audio_s"] - codes / cps) <= 0.002 * codes / cps + 256 / 22050
        assert run["decode_s"] > 0
        assert run["ms_per_code"] == pytest.approx(1000 * run["decode_s"] / codes, rel=1e-12)
        assert run["ms_per_audio_s"] == pytest.approx(1000 * run["decode_s"] / run["audio_s"], rel=1e-12)
        assert run["ms_per_audio_s"] == pytest.approx(run["ms_per_code"] * codes / run["audio_s"], rel=1e-12)
        assert 0 < run["ttfa_s"] <= run["stream_total_s"]
    assert all(v == 1.0 for v in v20["vs_baseline"]["speedup"].values())
    speedup = v25["vs_baseline"]["speedup"]
    for key in ("ms_per_code", "ms_per_audio_s", "rtf", "total_s"):
        assert speedup[key] == pytest.approx(v20["median"][key] / v25["median"][key], rel=1e-12), key
    table = md.read_text()
    assert table in capsys.readouterr().out
    assert "| v20 | 2.0 |" in table and "| v25 | 2.5 |" in table and ", lang en," in table
    for r in (v20, v25):  # audio seconds and GPT ms per audio second are columns of the variant table
        assert f"| {r['median']['audio_s']:.3f} |" in table and f"| {r['median']['ms_per_audio_s']:.1f} |" in table
    assert "compare different models" in table and "a code is 20 ms of audio in 2.0 and 40 ms of audio in 2.5" in table
    assert f"| latent | {1000 * v20['median']['latent_s']:.1f} | - |" in table


def fake_row(name: str, kind: str, family: str, total_s: float) -> dict:
    """A worker's report with every time metric at `total_s` (for the ratio and report rules alone)."""
    return {"variant": name, "kind": kind, "family": family, "codes_per_second": FAMILIES[family].codes_per_second,
            "median": {**{k: total_s for k in TIME_METRICS}, "audio_s": 1.0, "codes": 10.0}, "load_s": 1.0,
            "size_mib": 10.0, "peak_rss_mib": 100.0, "peak_gpu_mib": None, "precision": {"gpt": "fp32"},
            "providers": ["CPUExecutionProvider"]}


def fake_report(rows: list[dict]) -> dict:
    return {"workload": asdict(Workload(codes=10)), "variants": rows, "baseline": with_ratios(rows), "device": "cpu",
            "threads": 1, "repeats": 1, "date": "today", "platform": "Linux", "cpu_count": 2,
            "versions": {"onnxruntime": "1", "torch": "2"}}


def test_torch_is_compared_only_with_bundles_of_its_checkpoints_family():
    rows = [fake_row("torch", "torch", "2.5", 4.0), fake_row("v20", "runtime", "2.0", 1.0),
            fake_row("v25", "runtime", "2.5", 2.0)]
    report = fake_report(rows)
    assert report["baseline"] == "torch"
    assert rows[1]["vs_baseline"] is None and rows[2]["vs_baseline"]["speedup"]["total_s"] == 2.0
    text = markdown(report)
    assert "| v20 | 2.0 |" in text and "| 2.00x |" in text
    assert ("torch is the 2.5 reference (its checkpoint's family) and is compared only with 2.5 bundles: "
            "no ratios for v20 (another family)") in text


def test_a_bundle_baseline_is_compared_with_every_family_and_the_report_says_so():
    rows = [fake_row("v20", "runtime", "2.0", 1.0), fake_row("v25", "runtime", "2.5", 2.0)]
    report = fake_report(rows)
    assert report["baseline"] == "v20" and rows[1]["vs_baseline"]["speedup"]["total_s"] == 0.5
    text = markdown(report)
    assert "Speedup = v20 time / variant time" in text and "| 1.00x (ref) |" in text and "| 0.50x |" in text
    assert "The ratios against v20 (2.0) compare different models" in text
    one_family = markdown(fake_report([fake_row("a", "runtime", "2.0", 1.0), fake_row("b", "runtime", "2.0", 2.0)]))
    assert "Families differ" not in one_family and "lang" not in one_family.splitlines()[0]


def test_a_language_the_bundle_does_not_speak_fails_before_any_worker(tiny_bundle, tmp_path, capsys):
    rc = main(["bench", "--no-torch", "--bundle", f"v20={tiny_bundle}", "--lang", "ja", "--json",
               str(tmp_path / "x.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "--bundle v20: lang: 'ja' is not a language of this IndexTTS2 (2.0) bundle" in err
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("which", ["checkpoint", "bundle"])
def test_wrong_folders_are_one_line_errors(which, tiny_checkpoint, tiny_bundle, tmp_path, capsys):
    """A folder that is not a checkpoint / bundle fails before any worker starts: one line, exit 1."""
    ckpt, bundle = (tmp_path, tiny_bundle) if which == "checkpoint" else (tiny_checkpoint, tmp_path)
    rc = main(["bench", "--checkpoint", str(ckpt), "--bundle", f"b={bundle}", "--json", str(tmp_path / "x.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1 and "Traceback" not in err
    want = "config.yaml" if which == "checkpoint" else "manifest.json"
    assert f"{tmp_path}: no {want} there" in err and not (tmp_path / "x.json").exists()


def test_runtime_imports_nothing_of_the_bench():
    """Every runtime module, and the CLI's parser on a bench command line, load no module of the bench
    package: only running `bench` imports it."""
    script = textwrap.dedent("""
        import importlib, json, pkgutil, sys
        import indextts2_onnx.runtime as runtime
        names = [m.name for m in pkgutil.iter_modules(runtime.__path__)]
        for name in names:
            importlib.import_module(f"indextts2_onnx.runtime.{name}")
        from indextts2_onnx.runtime.cli import build_parser
        build_parser().parse_args(["bench", "--no-torch", "--bundle", "b", "--json", "out.json"])
        bench = sorted(m for m in sys.modules if m.split(".")[:2] == ["indextts2_onnx", "bench"])
        print(json.dumps({"runtime": names, "bench": bench}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout)
    assert {"pipeline", "cli", "options", "results"} <= set(loaded["runtime"])  # the walk found the modules
    assert loaded["bench"] == []
