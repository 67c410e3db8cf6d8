"""Torch-free IndexTTS2 runtime on ONNX Runtime.

    from indextts2_onnx.runtime import IndexTTS2, Speaker
"""

import importlib.util as _util

if _util.find_spec("onnxruntime") is None:
    raise ImportError(
        "indextts2_onnx.runtime needs ONNX Runtime: install `pip install 'indextts2-onnx[cpu]'` "
        "or, on a CUDA machine, `pip install 'indextts2-onnx[gpu]'` (never both)"
    )

from .errors import BundleError, GenerationError, IndexTTS2Error, InputError  # noqa: E402
from .pipeline import IndexTTS2  # noqa: E402
from .sampling import SamplingOptions  # noqa: E402
from .speaker import Speaker  # noqa: E402

__all__ = ["IndexTTS2", "Speaker", "SamplingOptions", "IndexTTS2Error", "BundleError", "InputError",
           "GenerationError"]
