#!/usr/bin/env bash
# GPU check (run on a machine with an NVIDIA GPU, from this checkout, after `make venv`):
#   1. the gpu profile rendered for real (the DALI definition the server's DALI serializes) and statically checked;
#   2. FP16 TensorRT engines of the three ONNX models vs ONNX Runtime on the CPU (export.tensorrt: onnxruntime-gpu's
#      TensorRT provider with the served options, or the TensorRT Python API; no trtexec needed);
#   3. the nvJPEG DALI pipeline vs the CPU one (tests/parity, GPU test);
#   4. if Docker (with compose and the NVIDIA runtime) is there: the whole gpu profile serves, bench.gpu checks
#      what the adapter relies on (its smoke check) and measures it.
# Each step says what it skipped and why; the script fails on the first step that fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
make models
$PY -m triton_repo.render --profile gpu --out .cache/triton_repo_gpu
if $PY -c "import tensorrt" 2>/dev/null || \
   $PY -c "import onnxruntime as o, sys; sys.exit('TensorrtExecutionProvider' not in o.get_available_providers())"; then
  $PY -m export.tensorrt
else
  echo "export.tensorrt skipped: install the TensorRT Python API (pip install tensorrt) or onnxruntime-gpu with TensorRT"
fi
$PY -m pytest -q -rs tests/parity/test_dali_parity.py -k gpu
if command -v docker >/dev/null && docker compose version >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  docker compose -f docker-compose.gpu.yml up -d --build --wait triton
  trap 'docker compose -f docker-compose.gpu.yml down' EXIT
  # smoke check first (multi-image requests, embed_image through DALI, a bad image refused alone), then figures
  $PY -m bench.gpu --url 127.0.0.1:8001 --http http://127.0.0.1:8000
else
  echo "no Docker engine with compose: the gpu profile's server-side tests were not run"
fi
