#!/usr/bin/env bash
# Train the scenes model on a GPU machine that has torch + transformers but no diffusers (carried as wheels in
# .whl, with all-MiniLM-L6-v2 in fp16 in .whl/minilm). Writes weights, log and a sample grid to $OUT.
# Usage: OUT=dir bash tools/scenes/device_run.sh [PY] [extra train args]
set -euo pipefail
PY=${1:-python3}; shift || true
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
TE=.whl/minilm
if [ -f .whl/minilm/model.safetensors.gz ]; then  # carried with unused vocabulary rows zeroed, compressed
  mkdir -p /tmp/minilm && cp .whl/minilm/*.json .whl/minilm/vocab.txt /tmp/minilm/
  gunzip -c .whl/minilm/model.safetensors.gz > /tmp/minilm/model.safetensors && TE=/tmp/minilm
fi
export PYTHONPATH=/tmp/site:$PWD/tools PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE
$PY -m scenes.train --text-encoder $TE --out "$OUT" "$@" 2>&1 | tee "$OUT/train.txt"
[ -n "${SKIP_SAMPLE:-}" ] && exit 0
$PY -m scenes.assemble --weights "$OUT" --text-encoder $TE --out /tmp/pipe --with-text-encoder-weights
$PY -m scenes.sample --pipeline /tmp/pipe --out "$OUT/samples.png" --device "${SAMPLE_DEVICE:-cuda}" 2>&1 | tee -a "$OUT/train.txt"
