#!/usr/bin/env bash
# The test command: set up .venv (CPU torch, ONNX Runtime CPU, the server and Ray Serve, Japanese (MeCab), test references) and run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh ray,ja,test
.venv/bin/python -m pytest -q "$@"
