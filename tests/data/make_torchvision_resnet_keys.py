"""Write torchvision_resnet_keys.json: the state-dict names and shapes of torchvision's
ResNet-18/34/50, which tests/segmentation/models/test_backbones.py compares with
segmentation.models.backbones.ResNet.

Run once with torchvision installed (the project itself does not need it):

    python tests/data/make_torchvision_resnet_keys.py
"""

import json
from pathlib import Path

import torch
import torchvision

keys = {}
for name in ("resnet18", "resnet34", "resnet50"):
    with torch.device("meta"):
        net = getattr(torchvision.models, name)(weights=None)
    keys[name] = {k: list(v.shape) for k, v in net.state_dict().items()}
out = Path(__file__).with_name("torchvision_resnet_keys.json")
versions = {"torchvision": torchvision.__version__, "torch": torch.__version__}
lines = ["{", f'"versions": {json.dumps(versions)},', '"keys": {']
for i, (name, shapes) in enumerate(keys.items()):
    lines.append(f"{json.dumps(name)}: {{")
    lines += [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in shapes.items()]
    lines[-1] = lines[-1].rstrip(",")
    lines.append("}," if i < len(keys) - 1 else "}")
lines += ["}", "}"]
out.write_text("\n".join(lines) + "\n")
print(f"wrote {out} ({out.stat().st_size} bytes)")
