"""Torch-free IndexTTS2 runtime on ONNX Runtime.

    from indextts2_onnx.runtime import IndexTTS2, Speaker, SynthesisOptions

    tts = IndexTTS2("bundle")
    result = tts.synthesize("Hello!", "ref.wav", SynthesisOptions(seed=0))   # .audio, .sample_rate, .metrics
    for chunk in tts.stream("A long text ...", "ref.wav", steps=10):        # AudioChunk values
        ...
    batch = tts.batched_generator()                                       # many requests, one decoder call a step
    handle = batch.add(tts.code_request(ids, speaker, emovec, seed=1))    # batch.step() -> {handle: CodeUpdate}
    tts.emotion_from_text("a little sad")                                 # EmotionFromText: .vector, .raw
"""

import importlib.util as _util

if _util.find_spec("onnxruntime") is None:
    raise ImportError(
        "indextts2_onnx.runtime needs ONNX Runtime: install `pip install 'indextts2-onnx[cpu]'` "
        "or, on a CUDA machine, `pip install 'indextts2-onnx[gpu]'` (never both)"
    )

from .batched import BatchedGenerator, BatchOptions, CodeRequest, CodeUpdate  # noqa: E402
from .emotion_text import EmotionFromText  # noqa: E402
from .errors import BundleError, GenerationError, IndexTTS2Error, InputError  # noqa: E402
from .options import SynthesisOptions  # noqa: E402
from .pipeline import IndexTTS2  # noqa: E402
from .results import AudioChunk, Metrics, SynthesisResult  # noqa: E402
from .sampling import SamplingOptions  # noqa: E402
from .speaker import Speaker  # noqa: E402

__all__ = ["IndexTTS2", "Speaker", "SynthesisOptions", "AudioChunk", "SynthesisResult", "Metrics",
           "SamplingOptions", "EmotionFromText", "BatchedGenerator", "BatchOptions", "CodeRequest", "CodeUpdate",
           "IndexTTS2Error", "BundleError", "InputError", "GenerationError"]
