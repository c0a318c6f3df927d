"""The model zoo: every architecture a recipe's ``arch`` may name, built by ``build_model``.

=================================  ===================================================
arch                               model
=================================  ===================================================
``cnn5``                           the paper's small CNN: conv1 6@5x5, pool, conv2
                                   16@5x5, pool, conv3 32@3x3, FC 64, dropout 0.25,
                                   FC classes (ReLU after every hidden layer)
``vgg13bn``                        torchvision's ``vgg13_bn`` features (max-pools in
                                   ceil mode so 28x28 inputs fit), global average
                                   pooling, ``Linear(512, num_classes)``
``resnet``                         ResNet-34 layout (BasicBlock, [3, 4, 6, 3]) with a
                                   CIFAR-style stem (3x3 conv, no max-pool) for images
                                   up to 64 pixels
``torchvision:<name>``             any torchvision classification model, untrained,
                                   first convolution adapted to ``in_channels``
``module:<package.module>:<Cls>``  a user's ``nn.Module``, built as
                                   ``Cls(num_classes=..., in_channels=...)``
=================================  ===================================================

Every built model carries ``model.ml4ml_build``: the ``build_model`` keywords
(``arch``, ``num_classes``, ``in_channels``, ``image_size``) so a checkpoint can rebuild it.
"""

from __future__ import annotations

import importlib
import inspect
import numbers

import torch
from torch import nn

from ml4ml.errors import InputError, ML4MLError

ARCHITECTURES = ("cnn5", "vgg13bn", "resnet", "torchvision:<name>",
                 "module:<package.module>:<Class>")
SMALL_IMAGE = 64  # resnet: CIFAR-style stem up to this many pixels


def build_model(arch: str, *, num_classes: int, in_channels: int, image_size=None,
                pretrained: str = "") -> nn.Module:
    """Build an untrained (or ``pretrained``) classifier named by ``arch``.

    Parameters
    ----------
    arch : one of ``ARCHITECTURES`` (see the module table).
    num_classes : number of output logits.
    in_channels : channels of the (batch, channel, height, width) input.
    image_size : height (= width) or (height, width) of the input; ``cnn5`` sizes its
        first fully-connected layer from it (a ``LazyLinear`` when None), ``resnet``
        picks its stem from it (CIFAR-style when None or <= 64).
    pretrained : "" for none, else a local weights file holding a state dict. For
        ``vgg13bn`` it is torchvision's ImageNet ``vgg13_bn`` state dict, loaded into
        ``features`` (every feature weight must be there); for other archs every tensor
        whose name and shape match is loaded. A first convolution whose input channels
        differ is adapted (RGB weights summed for 1 channel, else averaged and repeated).

    Returns the model in training mode with ``model.ml4ml_build`` set.
    """
    if not isinstance(arch, str):
        raise InputError(f"arch must be a string, got {arch!r}", field="arch")
    _check_positive_int(num_classes, "num_classes")
    _check_positive_int(in_channels, "in_channels")
    size = _image_hw(image_size)
    if arch == "cnn5":
        model = CNN5(num_classes=num_classes, in_channels=in_channels, image_size=size)
    elif arch == "vgg13bn":
        model = VGG13BN(num_classes=num_classes, in_channels=in_channels)
    elif arch == "resnet":
        model = _resnet(num_classes, in_channels, size)
    elif arch.startswith("torchvision:"):
        model = _torchvision_model(arch.split(":", 1)[1], num_classes, in_channels)
    elif arch.startswith("module:"):
        model = _user_model(arch, num_classes, in_channels, image_size)
    else:
        raise InputError(
            f"unknown arch {arch!r}; expected one of {', '.join(ARCHITECTURES)}", field="arch"
        )
    if pretrained:
        _load_pretrained(model, pretrained, features_only=(arch == "vgg13bn"))
    model.ml4ml_build = {"arch": arch, "num_classes": int(num_classes),
                         "in_channels": int(in_channels),
                         "image_size": None if size is None else list(size)}
    return model


class CNN5(nn.Module):
    """The paper's five-layer CNN (three convolutions, two fully-connected layers).

    28x28 input: conv1 -> 24, pool -> 12, conv2 -> 8, pool -> 4, conv3 -> 2: 128 features;
    32x32 input: 28, 14, 10, 5, 3: 288 features.
    """

    def __init__(self, num_classes: int, in_channels: int, image_size=None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.conv3 = nn.Conv2d(16, 32, 3)
        self.pool = nn.MaxPool2d(2, 2)
        self.relu = nn.ReLU()
        if image_size is None:
            self.fc1 = nn.LazyLinear(64)
        else:
            self.fc1 = nn.Linear(32 * _cnn5_flat_hw(image_size), 64)
        self.dropout = nn.Dropout(0.25)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = self.relu(self.conv3(x))
        x = self.dropout(self.relu(self.fc1(torch.flatten(x, 1))))
        return self.fc2(x)


def _cnn5_flat_hw(size) -> int:
    h, w = size
    for _ in range(2):  # conv 5x5 then 2x2 pool
        h, w = (h - 4) // 2, (w - 4) // 2
    h, w = h - 2, w - 2  # conv 3x3
    if h < 1 or w < 1:
        raise InputError(
            f"cnn5 needs images of at least 18x18 pixels, got {size[0]}x{size[1]}",
            field="image_size",
        )
    return h * w


class VGG13BN(nn.Module):
    """torchvision ``vgg13_bn`` features, global average pooling, ``Linear(512, classes)``.

    Max-pools use ceil mode: 32x32 inputs reach 1x1 as in the paper, and 28x28 inputs
    (28, 14, 7, 4, 2, 1) fit too. Parameter names match torchvision's (``features.N``).
    """

    def __init__(self, num_classes: int, in_channels: int):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        # vgg13_bn's features without building its 120M-parameter ImageNet classifier
        features = make_layers(cfgs["B"], batch_norm=True)
        for layer in features:
            if isinstance(layer, nn.MaxPool2d):
                layer.ceil_mode = True
        if in_channels != 3:
            first = features[0]
            features[0] = nn.Conv2d(in_channels, first.out_channels, first.kernel_size,
                                    first.stride, first.padding)
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(512, num_classes)
        for module in self.modules():  # torchvision's VGG initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def _resnet(num_classes: int, in_channels: int, size) -> nn.Module:
    from torchvision.models.resnet import BasicBlock, ResNet

    model = ResNet(BasicBlock, [3, 4, 6, 3], num_classes=num_classes)
    if size is None or max(size) <= SMALL_IMAGE:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1,
                                bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3,
                                bias=False)
    return model


def _torchvision_model(name: str, num_classes: int, in_channels: int) -> nn.Module:
    import torchvision

    choices = sorted(torchvision.models.list_models(module=torchvision.models))
    if name not in choices:
        raise InputError(
            f"unknown torchvision classification model {name!r}; expected one of "
            f"{', '.join(choices)}",
            field="arch",
        )
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if in_channels != 3:
        _adapt_first_conv(model, in_channels)
    return model


def _adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """Replace the first ``Conv2d`` by one taking ``in_channels`` (same other settings)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            new = nn.Conv2d(in_channels, module.out_channels, module.kernel_size,
                            module.stride, module.padding, module.dilation, 1,
                            bias=module.bias is not None, padding_mode=module.padding_mode)
            setattr(parent, attr, new)
            return
    raise InputError(
        f"cannot adapt {type(model).__name__} to {in_channels} input channels: it has no "
        "Conv2d layer",
        field="arch",
    )


def _user_model(arch: str, num_classes: int, in_channels: int, image_size) -> nn.Module:
    parts = arch.split(":")
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise InputError(
            f"arch {arch!r} is not of the form 'module:<package.module>:<Class>'",
            field="arch", hint="e.g. 'module:mypackage.models:SmallNet'",
        )
    _, module_name, class_name = parts
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(
            f"cannot import module {module_name!r} named by arch {arch!r}: {exc}",
            field="arch", hint="check the module is installed or on PYTHONPATH",
        ) from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise InputError(
            f"module {module_name!r} has no attribute {class_name!r} (arch {arch!r})",
            field="arch",
        )
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise InputError(
            f"{module_name}.{class_name} must be a torch.nn.Module subclass, got {cls!r}",
            field="arch",
        )
    kwargs = {"num_classes": num_classes, "in_channels": in_channels}
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    if "image_size" in params:
        kwargs["image_size"] = image_size
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise InputError(
            f"cannot build {module_name}.{class_name}(num_classes=..., in_channels=...): "
            f"{exc}",
            field="arch", hint="its __init__ must take num_classes and in_channels keywords",
        ) from exc


def _load_pretrained(model: nn.Module, path: str, *, features_only: bool) -> None:
    """Load matching tensors of the state dict in ``path`` into ``model``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise ML4MLError("pretrained weights file not found", file=path,
                         field="pretrained") from exc
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ML4MLError(
            f"cannot read pretrained weights: expected a torch state dict, "
            f"{type(exc).__name__}: {exc}",
            file=path, field="pretrained",
        ) from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise ML4MLError(
            f"expected a state dict (names -> tensors), found {type(state).__name__}",
            file=path, field="pretrained",
        )
    own = model.state_dict()
    if features_only:
        wanted = [k for k in own if k.startswith("features.")]
        missing = [k for k in wanted if k not in state]
        if missing:
            raise ML4MLError(
                f"not a vgg13_bn state dict: {len(missing)} feature tensors missing "
                f"(first: {missing[0]!r})",
                file=path, field="pretrained",
            )
    else:
        wanted = list(own)
    loaded = {}
    for key in wanted:
        if key not in state:
            continue
        source, target = state[key], own[key]
        if source.shape == target.shape:
            loaded[key] = source.to(target.dtype)
        elif (source.dim() == 4 and target.dim() == 4 and source.shape[0] == target.shape[0]
              and source.shape[2:] == target.shape[2:]):
            loaded[key] = _adapt_conv_weight(source, target.shape[1]).to(target.dtype)
        elif features_only:
            raise ML4MLError(
                f"tensor {key!r} has shape {tuple(source.shape)}, expected "
                f"{tuple(target.shape)}",
                file=path, field="pretrained",
            )
    if not loaded:
        raise ML4MLError(
            f"no tensor in the file matches the model {type(model).__name__} by name and "
            "shape",
            file=path, field="pretrained",
        )
    model.load_state_dict(loaded, strict=False)


def _adapt_conv_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """(out, c, k, k) -> (out, in_channels, k, k): summed for 1 channel, else mean-repeated."""
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    mean = weight.mean(dim=1, keepdim=True)
    return mean.repeat(1, in_channels, 1, 1) * (weight.shape[1] / in_channels)


def _image_hw(image_size):
    if image_size is None:
        return None
    if isinstance(image_size, numbers.Integral) and not isinstance(image_size, bool):
        image_size = int(image_size)
        size = (image_size, image_size)
    else:
        try:
            size = tuple(int(s) for s in image_size)
        except TypeError:
            size = ()
    if len(size) != 2 or min(size) < 1:
        raise InputError(
            f"image_size must be a positive int or (height, width), got {image_size!r}",
            field="image_size",
        )
    return size


def _check_positive_int(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"{name} must be a positive int, got {value!r}", field=name)
