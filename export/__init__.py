"""Export an official IndexTTS2 checkpoint folder to ONNX graphs (needs the `[export]` extra)."""

import importlib.util as _util

_missing = [name for name in ("torch", "onnx", "onnxscript") if _util.find_spec(name) is None]
if _missing:
    raise ImportError(
        f"indextts2_onnx.export needs {', '.join(_missing)}: install the export extra, "
        "e.g. `pip install 'indextts2-onnx[export,cpu]'` (on CPU-only machines install "
        "`torch==2.13.0` or another CPU build of torch first)"
    )
