"""`indextts2-onnx bench`: exported bundles against the torch reference pipeline, the same work, one command.

Bundles of both model families, IndexTTS2 (2.0) and IndexTTS-2.5, may run side by side; each row names its
family. The text's language (`Workload.lang`, `--lang`, default "en") is passed to every variant: 2.5 needs
it, 2.0 takes en, zh or zhen and routes them through its one front end.

Every variant (the torch reference, then each bundle) runs in its own child process
(`python -m indextts2_onnx.bench.torch_worker --job JSON`, or `...bench.runtime_worker`), so its peak host
memory (`ru_maxrss`) is its own. A worker loads (timed), speaks one short untimed warm-up utterance, then
`repeats` timed ones, and prints one JSON object. All variants do identical work (`Workload`):

    one synthetic voice prompt (a WAV written once, shared), one text that tokenizes into ONE segment,
    exactly `codes` codes (the stop token is banned until then: HF `min_new_tokens`), upstream's beam
    sampling (3 beams, top-k 30, top-p 0.8, temperature 0.8, repetition penalty 10), `steps` CFM steps
    with cfg_rate 0.7, the speaker as its own emotion, and one `seed` for the call, as
    `IndexTTS2.synthesize` takes it: `runtime.pipeline.segment_seeds(seed, 1)` gives the code sampler's
    seed and the CFM start noise's seed, on both sides (greedy decoding then gives both the same codes).

The code count is the same for every variant, but a code is 20 ms of audio in 2.0 and 40 ms in 2.5
(`Family.codes_per_second`): each row reports the audio seconds it made (`audio_s`), and GPT time per
code (`ms_per_code`) and per second of audio (`ms_per_audio_s`), the fair one across families.

Modules: `workload` (the work and the worker protocol), `runtime_worker` (one `IndexTTS2.synthesize` call
per run, public API only), `torch_worker` (`export.torch_pipeline` timed stage by stage; needs torch),
`orchestrator` (runs the workers, computes the ratios), `report` (JSON and markdown). The runtime package
imports nothing of this one, and only the torch worker imports torch, so `bench --no-torch` runs on a
runtime-only install.

Stages (seconds, contiguous, so they sum to `total_s`). A bundle's are the `Metrics` of its timed
`synthesize` call; the torch worker books the same stages with a stopwatch:

    text_s          text -> BPE ids. Bundles: the call's wall time minus the stages below, so the text
                    front end plus the call's bookkeeping outside its timed stages (checking options and
                    arguments, joining chunks)
    prompt_s        voice file -> speaker features (front end, w2v-BERT x2, codec, CAMPPlus, length
                    regulator), then the emotion vector (as `Metrics.prompt_s`)
    conditioning_s  GPT speaker latent, decode prefix
    decode_s        the KV-cache decode loop with the sampler (`ms_per_code` = decode_s / codes,
                    `ms_per_audio_s` = decode_s / audio seconds)
    latent_s        the GPT's second ("latent") pass (2.5 has none: 0)
    mel_s           latent projector (2.5: codec decoder), length regulator, CFM loop over the DiT
    vocoder_s       BigVGAN

Time to first audio: for a bundle, the first chunk of the same work through `stream()` (chunked, default
plan), once per timed run; torch does not stream, so its TTFA is its total.

Speedups are baseline time / variant time, from medians measured in the same run. The baseline is the
torch reference when there is one, else the first bundle. Torch is of its checkpoint's family and is
compared only with bundles of that family (a row of the other family has `vs_baseline` None); a bundle
baseline is compared with every row, and the report says when that compares different models. No assertion
is ever made on timings: on a shared machine they drift; compare ratios, not absolute numbers.
"""

from .orchestrator import VOICE_SR, WORKERS, Variant, parse_bundle, run_bench, with_ratios
from .report import markdown, write_reports
from .workload import RUNTIME, STAGES, TIME_METRICS, TORCH, BenchError, Job, Workload

__all__ = ["Workload", "Job", "BenchError", "Variant", "parse_bundle", "run_bench", "with_ratios", "markdown",
           "write_reports",
           "STAGES", "TIME_METRICS", "TORCH", "RUNTIME", "VOICE_SR", "WORKERS"]
