#!/usr/bin/env bash
# GPU check (run on a machine with an NVIDIA GPU): the gpu profile rendered for real (model.dali serialized
# with CUDA), TensorRT FP16 engines built and compared with the ONNX models, the nvJPEG DALI branch compared
# with the CPU one. Then, if Docker is there, the whole gpu profile serves and the pipeline tests run on it.
set -euo pipefail
cd "$(dirname "$0")/.."
make models
.venv/bin/python -m export.tensorrt
.venv/bin/python -m triton_repo.render --profile gpu --out .cache/triton_repo_gpu
.venv/bin/python -m pytest -q -rs tests/parity/test_dali_parity.py -k gpu
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  docker compose -f docker-compose.gpu.yml up -d triton
  VS_TEST_TRITON_HTTP=127.0.0.1:8000 .venv/bin/python -m pytest -q tests/integration/test_pipeline.py
  docker compose -f docker-compose.gpu.yml down
else
  echo "no Docker engine: the gpu profile's server-side tests were not run"
fi
