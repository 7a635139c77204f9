#!/usr/bin/env bash
# The GPU checks in one prepared run (< 9 minutes on one H100/H200): the anonymize stage through
# Lightning on the GPU against a CPU run (experiments/gpu_pipeline_check.py), then the benchmark: config-f 1024 + IR-SE-50 +
# FaRL ViT-B/16 (random weights), paper settings (50 steps). One process: the official per-image loop
# as the baseline, then our batched loop in fp32, TF32, bf16, channels_last, the 256 px loss path,
# early stop and torch.compile (last: it compiles first). Every finished row is written to JSON at once (a timeout keeps what was done); a batch
# size that does not fit in memory is recorded as such and skipped.
#   bash experiments/gpu_check.sh [--device cpu]     (CPU: a smoke run of the same script, tiny sizes)
# The lent GPU machine has no network and lacks hydra-core/omegaconf/antlr4: `make gpu-wheels` puts
# them in .whl/ (git-ignored); carry .whl with the run and this script installs them into /tmp.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-outputs/gpu_check}"
mkdir -p "$out"
py=python3; [ -x .venv/bin/python ] && py=.venv/bin/python
if ! $py -c "import hydra" 2>/dev/null; then
  [ -d .whl ] || { echo "error: hydra-core is not installed and .whl/ is absent (run: make gpu-wheels)" >&2; exit 2; }
  $py -m pip install -q --no-index --no-deps --no-compile --target /tmp/anon_site .whl/*.whl
  export PYTHONPATH="/tmp/anon_site:${PYTHONPATH:-}"
fi
export PYTHONUNBUFFERED=1
if [ "${1:-}" = "--device" ] && [ "${2:-}" = "cpu" ]; then
  $py experiments/bench.py --device cpu --images 4 --steps 3 --rows 2 4 4,channels_last 4,loss32 4,stop0.05 4,compile \
    --json "$out/cpu_smoke.json"
  exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
# Lightning on the GPU end to end (trainer=gpu, the tiny config): every image once, codes near a CPU run.
timeout 120 $py experiments/gpu_pipeline_check.py --json "$out/gpu_pipeline.json" 2>&1 | tee "$out/gpu_pipeline.txt" || true
# fp32 needs ~2.8 GiB of activations per 1024 px image (measured on CPU): B=16 is the largest
# fp32 row that surely fits an 80 GB card; bigger rows that do not fit are recorded as such.
timeout ${BENCH_TIMEOUT:-400} $py experiments/bench.py --full --device cuda --images 32 --baseline-images 3 \
  --rows 8 16 16,tf32 16,bf16 32,bf16 16,bf16,channels_last 32,bf16,loss256 16,bf16,stop0.05 \
    16,bf16,compile 32,bf16,loss256,channels_last,compile \
  --json "$out/gpu_bench.json" 2>&1 | tee "$out/gpu_bench.txt"
