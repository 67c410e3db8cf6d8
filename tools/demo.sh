#!/usr/bin/env bash
# The tiny demo from scratch: set up .venv, write a random-weight checkpoint in the official layout,
# export it to onnx_models/demo, and speak a sentence with the torch-free runtime into demo.wav.
# Random weights produce meaningless codes: this shows the pipeline works, not what it sounds like.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
.venv/bin/python tools/make_checkpoint.py --config tiny --out checkpoints/tiny --seed 0 --force
.venv/bin/indextts2-onnx export checkpoints/tiny --out onnx_models/demo --force
.venv/bin/python tools/demo.py onnx_models/demo --out demo.wav
