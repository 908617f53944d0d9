#!/usr/bin/env bash
# The one-off CUDA check (run it where a GPU is available): the device-parametrised
# tests run on "cuda" as well as "cpu" (each on both engines, compiled and torch: with
# CUDA tensors the schedule is compiled on the CPU and the level loop runs the PyTorch
# path on the GPU), then the Graph LSTM benchmark on the GPU and, for comparison on the
# same machine, on its CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
python -m pytest -q -k "device" tests/graphlstm/test_graph_lstm.py tests/graphlstm/test_graph_lstm_weights.py \
    tests/graphlstm/test_graph_lstm_stack.py tests/graphlstm/test_graph_lstm_adjacency.py \
    tests/segmentation/models/test_pooling.py
python -m pytest -q tests/graphlstm/test_compiled.py
python scripts/benchmark.py graph-lstm --device cuda --repeats 20
python scripts/benchmark.py graph-lstm --repeats 10
