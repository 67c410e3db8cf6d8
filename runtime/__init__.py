"""Torch-free IndexTTS2 runtime on ONNX Runtime."""

import importlib.util as _util

if _util.find_spec("onnxruntime") is None:
    raise ImportError(
        "indextts2_onnx.runtime needs ONNX Runtime: install `pip install 'indextts2-onnx[cpu]'` "
        "or, on a CUDA machine, `pip install 'indextts2-onnx[gpu]'` (never both)"
    )
