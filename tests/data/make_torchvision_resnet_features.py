"""Write torchvision_resnet_features.pt: what torchvision's ResNet-18/50 compute, in
float64, with weights and an input that anyone can rebuild without torchvision.

tests/segmentation/models/test_backbones.py loads the same weights
(:func:`resnet_weights`, saved as a torchvision state dict, ``fc.*`` included) into
``segmentation.models.backbones`` and checks that it reproduces these features.

Run once with torchvision and timm installed (the project itself needs neither):

    python tests/data/make_torchvision_resnet_features.py

Weights and input are not drawn from a random number generator (whose streams
may change between torch versions) but from an integer hash of the parameter's
name and the element's index, computed exactly in int64: the test rebuilds
them bit for bit. The values are rounded to float32, as a released weights file
holds them; the networks then run in float64.

References, for an input of 40×72 pixels (not multiples of 32, so the padding
at the borders counts) normalised with the ImageNet statistics that
torchvision's weights declare:

- ``plain``: ``torchvision.models.resnet18`` / ``resnet50``, ``layer4`` output
  (output stride 32);
- ``dilated``: output stride 8 with ``replace_stride_with_dilation=(False, True,
  True)``. torchvision builds this for ResNet-50 only (its ``BasicBlock``
  refuses dilation), so for ResNet-18 the reference is timm's ``resnet18`` with
  ``output_stride=8``, whose blocks dilate the same way (the strided first
  convolution of a stage keeps the previous dilation). The script checks that
  timm and torchvision agree on everything torchvision does build.

Stored per network and variant (3,500 numbers in all): the feature shape, 32
evenly spaced channels of the features, and the sum over all channels.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import torch

NAMES = ("resnet18", "resnet50")
IMAGE_SHAPE = (1, 3, 40, 72)
KEPT_CHANNELS = 32
_PRIME = 2**31 - 1


def hashed_uniform(label: str, count: int) -> torch.Tensor:
    """``count`` float64 values in ``[0, 1)``, a fixed function of ``label`` and the index.

    Exact int64 arithmetic (every product stays below 2**62), so every torch
    version and device gives the same numbers.
    """
    x = (torch.arange(count, dtype=torch.int64) * 48271 + zlib.crc32(label.encode())) % _PRIME
    for constant in (1013904223, 22695477, 134775813):
        x = (x * x + constant) % _PRIME
    return x.double() / _PRIME


def _values(label: str, shape) -> torch.Tensor:
    count = 1
    for side in shape:
        count *= side
    return hashed_uniform(label, count).reshape(shape)


def resnet_weights(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """A state dict for these names and shapes, as torchvision saves one (float32).

    Convolution and linear weights: uniform with the variance of He
    initialisation (fan in), so activations stay of order one through the
    network; BatchNorm: scale in [0.5, 1], shift and running mean in
    [-0.2, 0.2], running variance in [0.5, 1.5].
    """
    state = {}
    for key, shape in shapes.items():
        shape = tuple(shape)
        u = _values(key, shape)
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
            continue
        if key.endswith("running_var"):
            value = 0.5 + u
        elif key.endswith(("running_mean", "bias")):
            value = 0.4 * u - 0.2
        elif len(shape) == 1:  # BatchNorm scale
            value = 0.5 + 0.5 * u
        else:
            fan_in = 1
            for side in shape[1:]:
                fan_in *= side
            value = (2 * u - 1) * (6.0 / fan_in) ** 0.5
        state[key] = value.float()
    return state


def input_image() -> torch.Tensor:
    """The input, float64 in [0, 1]."""
    return _values("image", IMAGE_SHAPE)


def summarise(features: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the fixture keeps of a ``[1, C, h, w]`` feature map."""
    step = features.shape[1] // KEPT_CHANNELS
    return {"shape": torch.tensor(features.shape), "channels": features[0, ::step].clone(),
            "channel_sum": features[0].sum(0)}


def main() -> None:
    import timm
    import torchvision
    from torchvision.models import ResNet18_Weights
    from torchvision.models.feature_extraction import create_feature_extractor
    from torchvision.transforms.functional import normalize

    preset = ResNet18_Weights.IMAGENET1K_V1.transforms()
    mean, std = list(preset.mean), list(preset.std)
    image = input_image()
    normalised = normalize(image, mean, std)

    def features(net, state):
        net.load_state_dict(state, strict=True)
        net = net.double().eval()
        with torch.no_grad():
            if isinstance(net, torchvision.models.ResNet):
                return create_feature_extractor(net, {"layer4": "out"})(normalised)["out"]
            return net.forward_features(normalised)

    fixture = {"imagenet_mean": torch.tensor(mean, dtype=torch.float64),
               "imagenet_std": torch.tensor(std, dtype=torch.float64)}
    for name in NAMES:
        with torch.device("meta"):
            shapes = {k: tuple(v.shape)
                      for k, v in getattr(torchvision.models, name)().state_dict().items()}
        state = resnet_weights(shapes)
        plain = features(getattr(torchvision.models, name)(), state)
        plain_timm = features(timm.create_model(name, pretrained=False), state)
        torch.testing.assert_close(plain_timm, plain, rtol=1e-12, atol=1e-12)
        dilated_timm = features(timm.create_model(name, pretrained=False, output_stride=8), state)
        if name == "resnet18":
            dilated = dilated_timm
        else:
            dilated = features(getattr(torchvision.models, name)(
                replace_stride_with_dilation=[False, True, True]), state)
            torch.testing.assert_close(dilated_timm, dilated, rtol=1e-12, atol=1e-12)
        for variant, value in (("plain", plain), ("dilated", dilated)):
            print(f"{name} {variant}: {tuple(value.shape)}, "
                  f"|x| mean {value.abs().mean():.3g}, max {value.abs().max():.3g}")
            for part, kept in summarise(value).items():
                fixture[f"{name}/{variant}/{part}"] = kept
    fixture["versions"] = (f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
                           f"timm {timm.__version__}")
    out = Path(__file__).with_name("torchvision_resnet_features.pt")
    torch.save(fixture, out)
    numbers = sum(v.numel() for k, v in fixture.items()
                  if isinstance(v, torch.Tensor) and not k.endswith("shape"))
    print(f"wrote {out} ({numbers} numbers, {out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
