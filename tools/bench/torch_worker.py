"""The bench's torch worker: the torch reference pipeline (`export.torch_pipeline`), timed stage by stage,
in its own process (needs torch: the `[export]` extra).

    python -m indextts2_onnx.bench.torch_worker --job JSON

It books the stages the runtime worker reads from `Metrics` the same way: the emotion vector inside
`prompt_s`, the speaker latent and the decode prefix in `conditioning_s`; `text_s` is tokenisation. Codes
and CFM noise are seeded as `IndexTTS2.synthesize` seeds them (`segment_seeds`), and a generated code the
codec cannot embed is refused as the runtime refuses it (`check_codebook`).

The checkpoint may be of either family. For IndexTTS-2.5 (`ref.is_25`) the text goes through the tiktoken
front end in `Workload.lang`, the decode prefix carries that language's row (`conditioning(lang_id=)`),
there is no latent pass (`latent_s` ~0, as in the runtime) and the mel comes from the codec
decoder (`decode_mel`). The row says the family, so the orchestrator compares it only with bundles of it.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from ..export import reference
from ..export.checkpoint import CheckpointError, CheckpointPaths
from ..export.config import ConfigError
from ..export.torch_pipeline import (TorchReference, conditioning, decode_mel, emotion_vector, generate_codes,
                                     prepare_speaker, vocode)
from ..runtime.errors import IndexTTS2Error
from ..runtime.family import FAMILIES
from ..runtime.pipeline import check_codebook, segment_seeds
from .workload import Job, Output, Stopwatch, Workload, measure, one_segment, peak_rss_mib, worker_main


def synthesize(ref: TorchReference, voice: str | Path, w: Workload) -> Output:
    """Voice file + text -> (waveform float32 (samples,), codes generated, stage seconds incl. total_s).

    The runtime worker's stages, options and seeds; tensors are created on the reference's device
    (`torch.device` context) so the modules' own factories land there."""
    gpt = ref.models.gpt
    lang = FAMILIES[ref.models.cfg.family].check_lang(w.lang)  # as IndexTTS2.resolve_options checks it
    code_seed, noise_seed = (int(s) for s in segment_seeds(w.seed, 1)[0])  # the text is one segment
    clock = Stopwatch(ref.sync)
    with torch.no_grad(), ref.device:
        if ref.is_25:  # the language token leads the ids, and its embedding row is added to the text
            ids = one_segment(ref.tokenizer.segments(w.text, lang), w.text)
            lang_id = ref.tokenizer.language_id(lang)
        else:  # 2.0's one front end routes zh/en itself
            ids, lang_id = one_segment(ref.tokenizer.segments(w.text), w.text), None
        clock.lap("text_s")
        spk = prepare_speaker(ref, voice)
        emovec = emotion_vector(gpt, spk)  # as Metrics.prompt_s: speaker preparation and the emotion vector
        clock.lap("prompt_s")
        cond = conditioning(gpt, spk, emovec, ids, lang_id)
        clock.lap("conditioning_s")
        codes = generate_codes(gpt, cond, w.options().sampling(), w.codes, np.random.default_rng(code_seed),
                               min_codes=w.codes)
        clock.lap("decode_s")
        # 2.5 has no second pass: its latent_s is the lap alone, ~0 (as in the runtime)
        latent = None if ref.is_25 else reference.latent(gpt, cond.speaker_latent, cond.emovec, ids, codes.tolist())
        clock.lap("latent_s")
        check_codebook(codes, ref.models.cfg.semantic_codec.codebook_size)
        mel = decode_mel(ref, codes, latent, spk, w.steps, w.cfg_rate, noise_seed)
        clock.lap("mel_s")
        wav = vocode(ref, mel)
        clock.lap("vocoder_s")
    return wav, int(codes.shape[0]), clock.timings()


# The CheckpointPaths fields a family's reference does not read (2.5: codec.pth and the tiktoken file
# replace the semantic codec and bpe.model).
UNREAD = {"2.0": ("root", "codec", "tokenizer"), "2.5": ("root", "semantic_codec", "bpe")}


def checkpoint_size_mib(paths: CheckpointPaths, family: str) -> float:
    """Bytes on disk of every file the reference of `family` reads (folders summed), in MiB."""
    total = 0
    for f in fields(paths):
        p = getattr(paths, f.name)
        if f.name in UNREAD[family]:
            continue
        files = [p] if p.is_file() else [q for q in p.rglob("*") if q.is_file()] if p.is_dir() else []
        total += sum(q.stat().st_size for q in files)
    return total / 2**20


def torch_worker(job: Job) -> dict:
    """Bench the torch reference in this process -> its report (the bench's reference row)."""
    if job.threads:
        torch.set_num_threads(job.threads)
    ref, report = measure(job, lambda: TorchReference.load(job.path, job.device), synthesize,
                          lambda r: r.sample_rate)
    cuda = ref.device.type == "cuda"
    family = FAMILIES[ref.models.cfg.family]
    loaded = [f.name for f in fields(ref.models) if f.name != "cfg" and getattr(ref.models, f.name) is not None]
    return {**report, "family": family.name, "codes_per_second": family.codes_per_second,
            "size_mib": checkpoint_size_mib(ref.paths, family.name), "precision": {name: "fp32" for name in loaded},
            "providers": [f"torch eager {ref.device.type}"], "peak_rss_mib": peak_rss_mib(),
            "peak_gpu_mib": torch.cuda.max_memory_allocated(ref.device) / 2**20 if cuda else None,
            "gpu": torch.cuda.get_device_name(ref.device) if cuda else None,
            "versions": {"torch": torch.__version__, "python": platform.python_version()}}


if __name__ == "__main__":
    sys.exit(worker_main(torch_worker, known=(IndexTTS2Error, ConfigError, CheckpointError)))
