#!/usr/bin/env bash
# Create .venv with the runtime, the export side, the server and (with `test`) the test references.
# torch comes first as the CPU build, so that no multi-GB CUDA build is pulled in.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="export,cpu,serve${1:+,$1}"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[$extras]"
