#!/bin/bash
# LoadGen Server runs at QPS (default 150) against Triton serving the counting model
# (8 stubs), once per client-process count in KS (default "1 8"); harness compare's table.
#   bash harness/scripts/triton_device.sh bash -c "QPS=250 KS=\"1 8\" bash harness/scripts/triton_loadgen.sh"
QPS=${QPS:-150}
rm -rf /tmp/lg* /tmp/crepo
python3 -c "from llmlib.triton_repo import generate_triton_config as g
g('/tmp/crepo', 'counting', instances=8, max_concurrency=128, vocab_size=2048)"
for k in ${KS:-1 8}; do
  python3 -m harness --core_type=triton_grpc --launch_server=triton --server_model=/tmp/crepo \
    --scenarios=server --server_target_qps="$QPS" --triton_num_clients_per_server="$k" \
    --log_dir=/tmp/lg"$k" --progress=false --min_duration=20000 > /tmp/lg"$k".out 2>&1 \
    || tail -20 /tmp/lg"$k".out
done
python3 -m harness compare /tmp/lg*/ --plot ""
