#!/usr/bin/env bash
# Serve exported keras-frcnn models with TensorFlow Serving's GPU image.
#
#   serving/run_gpu.sh [BASE_PATH]      # BASE_PATH: the --out of export.py (default exported/frcnn)
#
# REST on :8501, gRPC on :8500, the model named "frcnn" (serving/models.config), server-side
# batching on (serving/batching_parameters.txt). A new version folder written by export.py into
# BASE_PATH is picked up within 5 s and replaces the old one without downtime.
# TF_SERVING_VERSION: use the TensorFlow version that exported the model, or a newer one.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
base_path=$(realpath "${1:-exported/frcnn}")
version=${TF_SERVING_VERSION:-2.21.0}
exec docker run --rm --gpus all -p 8500:8500 -p 8501:8501 \
  -v "$base_path:/models/frcnn:ro" \
  -v "$here/models.config:/config/models.config:ro" \
  -v "$here/batching_parameters.txt:/config/batching_parameters.txt:ro" \
  "tensorflow/serving:${version}-gpu" \
  --model_config_file=/config/models.config \
  --enable_batching=true --batching_parameters_file=/config/batching_parameters.txt \
  --file_system_poll_wait_seconds=5
