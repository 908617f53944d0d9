"""ResNet backbones: torchvision's names, shapes and numbers, dilation, weights files,
normalisation."""

import importlib.util
import json

import pytest
import torch
import torch.nn.functional as F

from segmentation.models.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RESNETS,
    ResNet,
    ResNetBackbone,
    SmallBackbone,
    build_backbone,
    load_resnet_state_dict,
)
from tests.helpers import ROOT

DATA = ROOT / "tests" / "data"
# Written by torchvision itself (tests/data/make_torchvision_resnet_keys.py).
FIXTURE = json.loads((DATA / "torchvision_resnet_keys.json").read_text())
# torchvision's (and, for the dilated ResNet-18, timm's) float64 features of hashed
# weights and input, which the generating script rebuilds without either library.
_spec = importlib.util.spec_from_file_location(
    "make_torchvision_resnet_features", DATA / "make_torchvision_resnet_features.py")
REFERENCE = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(REFERENCE)
FEATURES = torch.load(DATA / "torchvision_resnet_features.pt", weights_only=True)


def torchvision_shapes(name, keep_fc=False):
    return {k: tuple(v) for k, v in FIXTURE["keys"][name].items()
            if keep_fc or not k.startswith("fc.")}


def torchvision_like_state(name, seed=0):
    """A state dict as torchvision saves it (fc included), with random values."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in torchvision_shapes(name, keep_fc=True).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g) * 0.1
    return state


@pytest.mark.parametrize("name", list(RESNETS))
@pytest.mark.parametrize("dilated", [False, True])
def test_state_dict_names_and_shapes_are_torchvisions(name, dilated):
    assert any(k.startswith("fc.") for k in FIXTURE["keys"][name])
    with torch.device("meta"):
        net = ResNet(name, (False, dilated, dilated))
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert ours == torchvision_shapes(name)


def randomise_batchnorm(net, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.bias.shape, generator=g) * 0.4 - 0.2)


@pytest.mark.parametrize("name", list(RESNETS))
def test_dilated_resnet_is_the_resnet_on_a_denser_grid(name):
    # Replacing a stride by dilation (first strided conv keeps the old dilation,
    # the rest take the new one) computes the same features on a grid 2x denser
    # per replaced stride: at output stride 8, every 4th position is exactly the
    # plain ResNet's output at stride 32 (input sides multiples of 32).
    torch.manual_seed(0)
    plain = ResNet(name, (False, False, False))
    randomise_batchnorm(plain)
    dilated = ResNet(name)
    dilated.load_state_dict(plain.state_dict(), strict=True)
    plain, dilated = plain.double().eval(), dilated.double().eval()
    x = torch.rand(2, 3, 64, 96, dtype=torch.float64)
    with torch.no_grad():
        coarse, dense = plain(x), dilated(x)
    assert plain.output_stride == 32 and dilated.output_stride == 8
    assert coarse.shape == (2, plain.out_channels, 2, 3)
    assert dense.shape == (2, plain.out_channels, 8, 12)
    torch.testing.assert_close(dense[..., ::4, ::4], coarse, atol=1e-10, rtol=0)
    assert not torch.allclose(dense[..., 1::4, ::4], coarse, atol=1e-3)


def test_torchvision_state_dict_loads_strictly_without_fc(tmp_path):
    state = torchvision_like_state("resnet18")
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(state, path)
    loaded = load_resnet_state_dict(path, "resnet18")
    assert set(loaded) == set(state) - {"fc.weight", "fc.bias"}
    backbone = ResNetBackbone("resnet18", width=8)
    backbone.load_pretrained(path)
    for key, value in backbone.body.state_dict().items():
        assert torch.equal(value, state[key]), key


def assert_torchvisions_features(features, name, variant):
    expected = {part: FEATURES[f"{name}/{variant}/{part}"]
                for part in ("shape", "channels", "channel_sum")}
    assert tuple(features.shape) == tuple(expected["shape"].tolist())
    got = REFERENCE.summarise(features)
    # Activations are of order 1 to 50. Bit for bit here; a BLAS or convolution kernel
    # that sums in another order may differ by ~1e-13.
    torch.testing.assert_close(got["channels"], expected["channels"], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(got["channel_sum"], expected["channel_sum"], rtol=1e-9,
                               atol=1e-9)


@pytest.mark.parametrize("name", REFERENCE.NAMES)
def test_resnet_computes_torchvisions_features(name, tmp_path):
    # A torchvision state dict (fc included) through the weights-file path, then
    # the backbone's own forward from a [0, 1] image: the body's output is the
    # dilated network's features, the plain ResNet's are torchvision's resnetXX.
    state = REFERENCE.resnet_weights(torchvision_shapes(name, keep_fc=True))
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)
    backbone = ResNetBackbone(name, width=4)
    backbone.load_pretrained(path)
    backbone = backbone.double().eval()
    body_output = {}
    backbone.body.register_forward_hook(lambda module, args, out: body_output.update(out=out))
    image = REFERENCE.input_image()
    with torch.no_grad():
        backbone(image)
    assert_torchvisions_features(body_output["out"], name, "dilated")

    plain = ResNet(name, replace_stride_with_dilation=(False, False, False))
    plain.load_state_dict(backbone.body.state_dict(), strict=True)
    mean = FEATURES["imagenet_mean"].view(1, 3, 1, 1)
    std = FEATURES["imagenet_std"].view(1, 3, 1, 1)
    with torch.no_grad():
        assert_torchvisions_features(plain.double().eval()((image - mean) / std), name, "plain")


@pytest.mark.parametrize("case", ["missing", "garbage", "not a state dict", "other net",
                                  "wrong shape", "extra key"])
def test_bad_weights_files_are_clear_errors(case, tmp_path):
    path = tmp_path / "weights.pth"
    needle = {"missing": "do not exist", "garbage": "cannot be read",
              "not a state dict": "not a state dict", "other net": "look like resnet50",
              "wrong shape": "of another shape", "extra key": "unexpected"}[case]
    if case == "garbage":
        path.write_bytes(b"certainly not a torch file")
    elif case == "not a state dict":
        torch.save([torch.zeros(3)], path)
    elif case == "other net":
        torch.save(torchvision_like_state("resnet50"), path)
    elif case == "wrong shape":
        state = torchvision_like_state("resnet18")
        state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
        torch.save(state, path)
    elif case == "extra key":
        state = torchvision_like_state("resnet18")
        state["layer5.weight"] = torch.zeros(1)
        torch.save(state, path)
    with pytest.raises(ValueError, match=needle) as info:
        load_resnet_state_dict(path, "resnet18")
    assert "weights.pth" in str(info.value)
    if case in ("other net", "wrong shape", "extra key"):
        assert "do not match resnet18" in str(info.value)


def test_resnet_normalises_with_imagenet_statistics():
    # The statistics torchvision's ImageNet weights declare (their preset transform).
    mean = FEATURES["imagenet_mean"].view(1, 3, 1, 1)
    std = FEATURES["imagenet_std"].view(1, 3, 1, 1)
    assert torch.tensor(IMAGENET_MEAN, dtype=torch.float64).tolist() == mean.flatten().tolist()
    assert torch.tensor(IMAGENET_STD, dtype=torch.float64).tolist() == std.flatten().tolist()
    torch.manual_seed(0)
    backbone = ResNetBackbone("resnet18", width=4).double().eval()
    # Not in the state dict: checkpoints hold weights only.
    assert not any(k in ("mean", "std") for k in backbone.state_dict())
    seen = {}
    backbone.body.register_forward_pre_hook(lambda module, args: seen.update(body_input=args[0]))
    backbone.body.register_forward_hook(lambda module, args, out: seen.update(body_output=out))
    image = torch.rand(1, 3, 40, 56, dtype=torch.float64)
    with torch.no_grad():
        out = backbone(image)
        torch.testing.assert_close(seen["body_input"], (image - mean) / std, rtol=0, atol=1e-15)
        expected = F.interpolate(backbone.proj(seen["body_output"]), size=(40, 56),
                                 mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_small_backbone_keeps_its_normalisation():
    torch.manual_seed(0)
    small = SmallBackbone(3, 4).eval()
    image = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        torch.testing.assert_close(small(image), small.body((image - 0.5) / 0.25))


def test_build_backbone_errors():
    with pytest.raises(ValueError, match="backbone"):
        build_backbone("vgg16", 8)
    with pytest.raises(ValueError, match="3 input channels"):
        build_backbone("resnet18", 8, in_channels=4)
    with pytest.raises(ValueError, match="replace_stride_with_dilation"):
        ResNet("resnet18", (True, True))
