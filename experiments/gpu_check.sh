#!/usr/bin/env bash
# The GPU benchmark in one prepared run (< 8 minutes on one H100/H200): config-f 1024 + IR-SE-50 +
# FaRL ViT-B/16 (random weights), paper settings (50 steps), the official per-image loop as baseline,
# our batched loop at B = 8, 16, 32 in fp32, then bf16 and the 256 px loss path. Tables go to JSON.
#   bash experiments/gpu_check.sh [--device cpu]     (CPU: a smoke run of the same script, tiny sizes)
# On the lent GPU machine (no network) hydra-core/omegaconf/antlr4 travel as wheels in .whl/:
#   pip download --no-deps -d .whl hydra-core==1.3.2 omegaconf==2.3.0 antlr4-python3-runtime==4.9.3
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-outputs/gpu_check}"
mkdir -p "$out"
py=python3; [ -x .venv/bin/python ] && py=.venv/bin/python
if ! $py -c "import hydra" 2>/dev/null && [ -d .whl ]; then
  $py -m pip install -q --no-index --no-deps --target /tmp/anon_site .whl/*.whl
  export PYTHONPATH="/tmp/anon_site:${PYTHONPATH:-}"
fi
export PYTHONUNBUFFERED=1
if [ "${1:-}" = "--device" ] && [ "${2:-}" = "cpu" ]; then
  $py experiments/bench.py --device cpu --images 4 --batch-sizes 2 4 --steps 3 --json "$out/cpu_smoke.json"
  exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
timeout 300 $py experiments/bench.py --full --device cuda --images 32 --baseline-images 4 \
  --batch-sizes 8 16 32 --json "$out/fp32.json"
timeout 150 $py experiments/bench.py --full --device cuda --images 32 --baseline-images 2 \
  --batch-sizes 16 32 --precision bf16 --loss-resolution 256 --json "$out/bf16_loss256.json"
