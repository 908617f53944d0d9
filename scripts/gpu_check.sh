#!/usr/bin/env bash
# The GPU check, in one call on a fresh CUDA machine (torch with CUDA, triton,
# torch_geometric, numba and scikit-image already installed there: nothing is
# installed or downloaded; the repository is used in place through PYTHONPATH).
#
#   scripts/gpu_check.sh [OUT_DIR]      # default: $OUT if set, else gpu_check_out
#
# Stages, each with its own time limit so that the whole ends within 8 minutes
# and writes what it measured even if one stage hangs or fails:
#   env         versions, the GPU
#   tests       the Triton engine's tests on CUDA (tests/graphlstm/test_triton.py),
#               the layer tests parametrised over devices ("-k device") and
#               torch.compile on CUDA (tests/graphlstm/test_compile.py -k cuda)
#   graph_lstm  benchmarks/gpu/graph_lstm.py: triton vs torch engine vs
#               GatedGraphConv(64, num_layers=1) on ~1,000 and ~4,000 superpixels
#               and a batch of 8 x ~1,000 (tables in graph_lstm.md)
#   train       benchmark.py train on CUDA: step breakdown (backbone, Graph LSTM,
#               schedule) for the small backbone and ResNet-50, fp32 and AMP, on the
#               default engine (Triton on CUDA); the small fp32 step again on the
#               torch engine (each run at most 60 s)
# Files in OUT_DIR: summary.txt, <stage>.log, graph_lstm.md. Exit status 1 if a
# stage failed or ran out of time (summary.txt says which).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu_check_out}}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 MPLBACKEND=Agg
unset TRITON_INTERPRET
py=${PYTHON:-python3}
status=0
start=$SECONDS

stage() {  # stage NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "=== $name (at most $limit s)"
    local t0=$SECONDS
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$out/$name.log"
    local rc=${PIPESTATUS[0]}
    local verdict=ok
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then verdict="TIMED OUT"; fi
    if [ "$rc" -ne 0 ] && [ "$verdict" = ok ]; then verdict="FAILED (exit $rc)"; fi
    [ "$rc" -eq 0 ] || status=1
    echo "$name: $verdict, $((SECONDS - t0)) s" | tee -a "$out/summary.txt"
}

: >"$out/summary.txt"
stage env 30 "$py" - <<'EOF'
import torch, triton, torch_geometric, numba, skimage
assert torch.cuda.is_available(), "no CUDA device"
print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__,
      "torch_geometric", torch_geometric.__version__, "numba", numba.__version__,
      "scikit-image", skimage.__version__)
print(torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0).multi_processor_count,
      "SMs")
import graphlstm.backend as b
print("graphlstm backends:", b.BACKENDS)
EOF

stage tests 150 "$py" -m pytest -q -p no:cacheprovider tests/graphlstm/test_triton.py \
    tests/graphlstm/test_graph_lstm.py tests/graphlstm/test_graph_lstm_weights.py \
    tests/graphlstm/test_graph_lstm_stack.py tests/graphlstm/test_graph_lstm_adjacency.py \
    tests/segmentation/models/test_pooling.py tests/graphlstm/test_compile.py \
    -k "triton or device or cuda"

stage graph_lstm 120 "$py" -m benchmarks.gpu.graph_lstm --device cuda --repeats 10 \
    --out "$out/graph_lstm.md"

train() {
    local rc=0 engine backbone amp
    for run in "auto small" "torch small" "auto small --amp" "auto resnet50" \
               "auto resnet50 --amp"; do
        read -r engine backbone amp <<<"$run"
        echo "--- engine $engine, backbone $backbone, ${amp:-fp32}"
        GRAPHLSTM_BACKEND=$engine timeout 60 "$py" scripts/benchmark.py train --device cuda \
            --processes 1 --steps 5 --backbone "$backbone" $amp || rc=1
    done
    return $rc
}
export -f train
export py
stage train 190 bash -c train

echo "total: $((SECONDS - start)) s" | tee -a "$out/summary.txt"
exit $status
