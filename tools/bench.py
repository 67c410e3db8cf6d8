"""Run `indextts2-onnx bench` from a checkout: exported bundles against the torch reference pipeline.

    python tools/bench.py --checkpoint CKPT --bundle fp32=BUNDLE [--bundle int8=BUNDLE2] --json bench.json \
        [--markdown bench.md] [--device cpu|cuda] [--codes 250] [--beams 3] [--steps 25] [--repeats 1] \
        [--threads N] [--no-torch] [--text T]

The same entry point as the installed command (see runtime/bench.py for what is measured and how).
"""

from __future__ import annotations

import sys

from indextts2_onnx.runtime.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
