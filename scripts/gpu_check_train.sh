#!/usr/bin/env bash
# The one-off CUDA check of training (issue 9), where a GPU is available:
#  1. the mixed-precision tests on "cuda" (float16 autocast + GradScaler, float32 Graph LSTM);
#  2. our ResNets against the installed torchvision (same state dict -> same features);
#  3. train.py under torchrun on CUDA (nccl): ResNet-18 from a torchvision state dict,
#     --freeze-bn --amp, then evaluate.py on the checkpoint;
#  4. the training throughput benchmark on CUDA (small and ResNet-50, float32 and AMP)
#     and on CPU (1 and 2 processes, 1 thread each).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
work=$(mktemp -d)
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))"

python -m pytest -q -p no:cacheprovider tests/segmentation/engine/test_train.py -k "amp and cuda"

python - "$work" <<'EOF'
import sys
import torch
from segmentation.models.backbones import ResNet
from segmentation.data.datasets import write_synthetic_voc
work = sys.argv[1]
try:
    import torchvision
except Exception as err:  # noqa: BLE001
    print("torchvision unavailable here:", err)
    torchvision = None
if torchvision is not None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 96, 128, dtype=torch.float64)
    for name in ("resnet18", "resnet34", "resnet50"):
        tv = getattr(torchvision.models, name)(weights=None).double().eval()
        ours = ResNet(name, (False, False, False)).double().eval()
        state = {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
        ours.load_state_dict(state, strict=True)
        with torch.no_grad():
            f = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))))
            diff = float((ours(x) - f).abs().max())
        print(f"torchvision {torchvision.__version__} {name}: max |ours - torchvision| = {diff:.2e}")
        if name == "resnet18":
            torch.save(tv.float().state_dict(), f"{work}/resnet18.pth")
else:
    from tests.segmentation.models.test_backbones import torchvision_like_state
    torch.save(torchvision_like_state("resnet18"), f"{work}/resnet18.pth")
write_synthetic_voc(f"{work}/voc", 16, 8, size=(96, 96), seed=0)
EOF

# (These weights are random, not ImageNet's: frozen at mean 0 / variance 1 their BatchNorm
# layers let activations grow past float16's range, so --amp runs with live BatchNorm and
# --freeze-bn in float32.)
common=(--data "$work/voc" --epochs 2 --batch-size 4 --n-segments 60 --device cuda
        --backbone resnet18 --backbone-weights "$work/resnet18.pth" --no-progress)
python -m torch.distributed.run --standalone --nproc_per_node 1 scripts/train.py \
    "${common[@]}" --out "$work/run_amp" --amp
python -m torch.distributed.run --standalone --nproc_per_node 1 scripts/train.py \
    "${common[@]}" --out "$work/run_frozen" --freeze-bn
python scripts/evaluate.py --data "$work/voc" --checkpoint "$work/run_amp/best.pt" --device cuda

python scripts/benchmark.py train --device cuda --processes 1 --steps 5
python scripts/benchmark.py train --device cuda --processes 1 --steps 5 --amp
python scripts/benchmark.py train --device cuda --processes 1 --steps 5 --backbone resnet50
python scripts/benchmark.py train --device cuda --processes 1 --steps 5 --backbone resnet50 --amp
python scripts/benchmark.py train --device cpu --processes 1,2 --steps 3
rm -rf "$work"
