#!/usr/bin/env bash
# On the lent GPU machine (device tool): the transformers core on a random model of
# Llama-3.1-8B's shape (the v6.0 llama3.1-8b benchmark's model; weights random, bf16), through
# LoadGen Offline on the tiny synthetic workload at that vocabulary. Carry
# .devcarry/gpuwheels (mlcommons-loadgen and pyarrow wheels for Python 3.12); results to $OUT.
#   run(command="bash harness/scripts/transformers_gpu.sh", carry=[".devcarry/gpuwheels"])
set -euo pipefail
OUT=${OUT:-/tmp/out}
MODEL=/tmp/llama31-8b-random
python3 -c "import mlperf_loadgen, pyarrow, pynvml" 2>/dev/null || {
    python3 -m pip install -q --no-index --find-links .devcarry/gpuwheels --target /tmp/site \
        mlcommons-loadgen pyarrow nvidia-ml-py
    export PYTHONPATH=/tmp/site
}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
t0=$(date +%s)
python3 - "$MODEL" <<'PY'
import sys, time, torch
from transformers import LlamaConfig, LlamaForCausalLM
cfg = LlamaConfig(
    hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192,
    rope_theta=500000.0, rms_norm_eps=1e-5, bos_token_id=128000, eos_token_id=None,
    tie_word_embeddings=False,
)  # eos None: every answer runs to max_new_tokens, as a benchmark of throughput wants
t = time.time()
torch.set_default_dtype(torch.bfloat16)
with torch.device("cuda"):
    model = LlamaForCausalLM(cfg)
model.save_pretrained(sys.argv[1])
print(f"random 8B written in {time.time() - t:.0f} s")
PY
echo "set-up: $(( $(date +%s) - t0 )) s"
python3 -m harness --core_type=transformers --transformers_model="$MODEL" --benchmarks=tiny \
    --vocab_size=128256 --scenarios=offline --sample_count=256 --min_query_count="${QUERIES:-1024}" \
    --offline_expected_qps=40 --min_duration=10000 --warmup_queries=8 --progress=false \
    --log_dir="$OUT/logs" 2>&1 | grep -v ContinuousBatchingLogger | tail -12
find "$OUT/logs" -name summary.json -exec cp {} "$OUT/summary.json" \;
find "$OUT/logs" -name gpu.csv -exec cp {} "$OUT/gpu.csv" \;
echo "total: $(( $(date +%s) - t0 )) s"
