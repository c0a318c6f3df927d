"""Model zoo: shapes for every arch, user modules, pretrained weights, every error path."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from ml4ml.zoo.architectures import CNN5, build_model
from ml4ml.errors import InputError, ML4MLError

SHAPES = [(1, 28), (3, 32)]
ARCHS = ["cnn5", "vgg13bn", "resnet", "torchvision:resnet18",
         "torchvision:mobilenet_v3_small", f"module:{__name__}:TinyNet"]


class TinyNet(nn.Module):
    """A user's model, imported by ``module:<this test module>:TinyNet``."""

    def __init__(self, num_classes, in_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3)
        self.head = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.head(self.conv(x).mean(dim=(2, 3)))


class SizedNet(TinyNet):
    """A user's model that also takes ``image_size``."""

    def __init__(self, num_classes, in_channels, image_size=None):
        super().__init__(num_classes, in_channels)
        self.image_size = image_size


class NoKeywords(nn.Module):
    def __init__(self):
        super().__init__()


NOT_A_MODULE = 3


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("in_channels,size", SHAPES)
@pytest.mark.parametrize("arch", ARCHS)
def test_output_shape(arch, in_channels, size):
    torch.manual_seed(0)
    model = build_model(arch, num_classes=7, in_channels=in_channels, image_size=size).eval()
    with torch.no_grad():
        out = model(torch.rand(2, in_channels, size, size))
    assert out.shape == (2, 7)
    assert model.ml4ml_build == {"arch": arch, "num_classes": 7, "in_channels": in_channels,
                                 "image_size": [size, size]}


@pytest.mark.parametrize("in_channels,size,flat", [(1, 28, 128), (3, 32, 288)])
def test_cnn5_layout(in_channels, size, flat):
    model = build_model("cnn5", num_classes=10, in_channels=in_channels, image_size=size)
    assert isinstance(model, CNN5)
    convs = [(n, m.in_channels, m.out_channels, m.kernel_size)
             for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert convs == [("conv1", in_channels, 6, (5, 5)), ("conv2", 6, 16, (5, 5)),
                     ("conv3", 16, 32, (3, 3))]
    assert (model.fc1.in_features, model.fc1.out_features) == (flat, 64)
    assert (model.fc2.in_features, model.fc2.out_features) == (64, 10)
    assert model.dropout.p == 0.25


def test_cnn5_without_image_size_is_lazy():
    model = build_model("cnn5", num_classes=10, in_channels=3)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert model.fc1.in_features == 288


def test_cnn5_too_small_image():
    with pytest.raises(InputError, match="at least 18x18 pixels, got 16x16"):
        build_model("cnn5", num_classes=10, in_channels=1, image_size=16)


def test_vgg13bn_matches_torchvision_features():
    with torch.device("meta"):
        reference = torchvision.models.vgg13_bn(weights=None).features.state_dict()
    model = build_model("vgg13bn", num_classes=10, in_channels=3, image_size=32)
    own = model.features.state_dict()
    assert list(own) == list(reference)
    assert all(own[k].shape == reference[k].shape for k in own)
    assert (model.classifier.in_features, model.classifier.out_features) == (512, 10)


def test_resnet_layout():
    model = build_model("resnet", num_classes=10, in_channels=1, image_size=28)
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    assert isinstance(model.layer1[0], torchvision.models.resnet.BasicBlock)
    assert (model.conv1.in_channels, model.conv1.kernel_size, model.conv1.stride) == \
        (1, (3, 3), (1, 1))
    assert isinstance(model.maxpool, nn.Identity)
    large = build_model("resnet", num_classes=10, in_channels=3, image_size=224)
    assert large.conv1.kernel_size == (7, 7) and isinstance(large.maxpool, nn.MaxPool2d)


def test_torchvision_first_conv_adapted():
    model = build_model("torchvision:mobilenet_v3_small", num_classes=5, in_channels=1)
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 1 and first.out_channels == 16 and first.stride == (2, 2)


def test_user_module_gets_image_size_when_it_takes_it():
    model = build_model(f"module:{__name__}:SizedNet", num_classes=3, in_channels=1,
                        image_size=28)
    assert model.image_size == 28 and model.head.out_features == 3


# ----------------------------------------------------------------------------- pretrained
def _vgg13_bn_file(path, *, seed=1):
    """A file shaped like torchvision's vgg13_bn state dict (random values)."""
    with torch.device("meta"):
        shapes = torchvision.models.vgg13_bn(weights=None).state_dict()
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in shapes.items():
        if key.startswith("features.") and value.dtype.is_floating_point:
            state[key] = torch.randn(value.shape, generator=generator)
        elif key.startswith("features."):
            state[key] = torch.tensor(5)  # num_batches_tracked
    state["classifier.6.bias"] = torch.zeros(1000)  # the ImageNet head is skipped
    torch.save(state, path)
    return state


@pytest.mark.parametrize("in_channels", [3, 1])
def test_pretrained_vgg13bn_loads_features(tmp_path, in_channels):
    path = tmp_path / "vgg13_bn.pth"
    state = _vgg13_bn_file(path)
    torch.manual_seed(0)
    head = build_model("vgg13bn", num_classes=10, in_channels=in_channels).classifier.weight
    torch.manual_seed(0)
    model = build_model("vgg13bn", num_classes=10, in_channels=in_channels,
                        image_size=28, pretrained=str(path))
    own = model.state_dict()
    for key, value in state.items():
        if key == "features.0.weight" and in_channels == 1:
            assert torch.equal(own[key], value.sum(dim=1, keepdim=True))
        elif key.startswith("features."):
            assert torch.equal(own[key], value), key
    assert torch.equal(model.classifier.weight, head)  # not from the file
    assert model(torch.rand(2, in_channels, 28, 28)).shape == (2, 10)


def test_pretrained_other_arch_loads_matching_tensors(tmp_path):
    path = tmp_path / "cnn5.pt"
    torch.manual_seed(1)
    source = build_model("cnn5", num_classes=10, in_channels=3, image_size=32)
    torch.save(source.state_dict(), path)
    torch.manual_seed(2)
    model = build_model("cnn5", num_classes=10, in_channels=1, image_size=32,
                        pretrained=str(path))
    assert torch.equal(model.conv1.weight, source.conv1.weight.sum(1, keepdim=True))
    assert torch.equal(model.fc2.weight, source.fc2.weight)


def test_pretrained_missing_file(tmp_path):
    path = tmp_path / "absent.pth"
    with pytest.raises(ML4MLError, match=r"absent\.pth.*field 'pretrained'.*not found"):
        build_model("vgg13bn", num_classes=10, in_channels=3, pretrained=str(path))


def test_pretrained_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.pth"
    path.write_bytes(b"this is not a torch file")
    with pytest.raises(ML4MLError, match=r"corrupt\.pth.*cannot read pretrained weights"):
        build_model("vgg13bn", num_classes=10, in_channels=3, pretrained=str(path))


def test_pretrained_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(ML4MLError, match=r"list\.pth.*expected a state dict.*found list"):
        build_model("vgg13bn", num_classes=10, in_channels=3, pretrained=str(path))


def test_pretrained_vgg13bn_missing_features(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(build_model("cnn5", num_classes=10, in_channels=3, image_size=32)
               .state_dict(), path)
    with pytest.raises(ML4MLError, match=r"resnet\.pth.*not a vgg13_bn state dict"):
        build_model("vgg13bn", num_classes=10, in_channels=3, pretrained=str(path))


def test_pretrained_vgg13bn_wrong_shape(tmp_path):
    path = tmp_path / "vgg.pth"
    state = _vgg13_bn_file(path)
    state["features.1.weight"] = torch.ones(3)
    torch.save(state, path)
    with pytest.raises(ML4MLError, match=r"'features\.1\.weight' has shape \(3,\), "
                                         r"expected \(64,\)"):
        build_model("vgg13bn", num_classes=10, in_channels=3, pretrained=str(path))


def test_pretrained_nothing_matches(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"unrelated.weight": torch.ones(2)}, path)
    with pytest.raises(ML4MLError, match=r"other\.pth.*no tensor in the file matches"):
        build_model("cnn5", num_classes=10, in_channels=1, image_size=28,
                    pretrained=str(path))


# ---------------------------------------------------------------------------- error paths
@pytest.mark.parametrize("arch,match", [
    ("lenet", r"field 'arch': unknown arch 'lenet'; expected one of cnn5, vgg13bn, resnet, "
              r"torchvision:<name>, module:<package\.module>:<Class>"),
    ("torchvision:nonet", r"unknown torchvision classification model 'nonet'; expected one "
                          r"of .*resnet18"),
    ("module:only_module", r"not of the form 'module:<package\.module>:<Class>'"),
    ("module:no_such_package_xyz.models:Net", r"cannot import module "
                                              r"'no_such_package_xyz\.models'"),
    (f"module:{__name__}:Missing", r"has no attribute 'Missing'"),
    (f"module:{__name__}:NOT_A_MODULE", r"must be a torch\.nn\.Module subclass, got 3"),
    (f"module:{__name__}:NoKeywords", r"cannot build .*NoKeywords\(num_classes=\.\.\., "
                                      r"in_channels=\.\.\.\)"),
    (5, r"arch must be a string, got 5"),
])
def test_bad_arch(arch, match):
    with pytest.raises(InputError, match=match) as info:
        build_model(arch, num_classes=10, in_channels=1)
    assert info.value.field == "arch"


@pytest.mark.parametrize("kwargs,field", [
    ({"num_classes": 0, "in_channels": 1}, "num_classes"),
    ({"num_classes": 10, "in_channels": 1.5}, "in_channels"),
    ({"num_classes": 10, "in_channels": 1, "image_size": (28,)}, "image_size"),
])
def test_bad_sizes(kwargs, field):
    with pytest.raises(InputError, match=f"field '{field}'"):
        build_model("cnn5", **kwargs)
