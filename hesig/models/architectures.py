"""Target classifiers with named layers, so any of them can be split at a paper's layer name.

Every model is an ``nn.Sequential`` over an ``OrderedDict``: ``model.conv1``, ``model.ReLU2`` ...
exist, and :func:`hesig.models.split.split_model` cuts at any name.

* ``lenet5`` -- He et al. (ACSAC 2019), Table 1: conv1 1->8 k5, ReLU1, pool1, conv2 8->16 k5,
  ReLU2, pool2, fc1 256->120, fc1act, fc2 120->84, fc2act, fc3 84->10. Needs >= 28x28 input.
* ``hecnn`` -- the CKKS-friendly CNN of TenSEAL's MNIST tutorial: conv1 1->4 k7 stride 3,
  act1 (x^2), fc1 256->64, act2 (x^2), fc2 64->10. Multiplicative depth 2 per square plus the
  plaintext-ciphertext products, which is what the CKKS oracle evaluates.
* ``cifar_cnn`` -- He et al.'s 6 conv + 2 fc CIFAR-10 network (conv11 ... ReLU32, fc1, fc2).
* ``bn_cnn`` -- three 3x3 conv + BatchNorm + ReLU + 2x2 max-pool stages (16, 32, 64 channels)
  and fc1 -> 256 -> classes: the vicious-classifier F of ``hesig attack vicious`` (0.29M
  parameters at 1x32x32, close to the 0.37M of the WideResNet-28-1 Malekzadeh & Gunduz use for
  MNIST, at a fraction of its CPU cost). H and W must be divisible by 8.
* ``mlp`` -- fc1 (C*H*W -> 64), fc1act, fc2 64->classes. For the bundled 8x8 digits, where the
  convolutional models do not fit; used by ``hesig demo``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
from torch import nn

from ..core.errors import InvalidValueError, ShapeError


class Square(nn.Module):
    """Elementwise x^2: the polynomial activation that CKKS evaluates with one multiplication."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


def _conv_out(size: int, kernel: int, stride: int = 1) -> int:
    return (size - kernel) // stride + 1


def lenet5(in_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10) -> nn.Sequential:
    c, h, w = in_shape
    fh = _conv_out(_conv_out(h, 5) // 2, 5) // 2
    fw = _conv_out(_conv_out(w, 5) // 2, 5) // 2
    if fh < 1 or fw < 1:
        raise ShapeError(f"lenet5 needs inputs of at least 16x16 pixels, got {h}x{w}")
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(c, 8, 5)), ("ReLU1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(8, 16, 5)), ("ReLU2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(16 * fh * fw, 120)), ("fc1act", nn.ReLU()),
        ("fc2", nn.Linear(120, 84)), ("fc2act", nn.ReLU()),
        ("fc3", nn.Linear(84, num_classes)),
    ]))


def hecnn(in_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10) -> nn.Sequential:
    c, h, w = in_shape
    oh, ow = _conv_out(h, 7, 3), _conv_out(w, 7, 3)
    if oh < 2 or ow < 2:
        raise ShapeError(f"hecnn needs inputs of at least 10x10 pixels, got {h}x{w}")
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(c, 4, 7, stride=3)), ("act1", Square()),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(4 * oh * ow, 64)), ("act2", Square()),
        ("fc2", nn.Linear(64, num_classes)),
    ]))


def mlp(in_shape: tuple[int, int, int] = (1, 8, 8), num_classes: int = 10) -> nn.Sequential:
    c, h, w = in_shape
    return nn.Sequential(OrderedDict([
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(c * h * w, 64)), ("fc1act", nn.ReLU()),
        ("fc2", nn.Linear(64, num_classes)),
    ]))


def cifar_cnn(in_shape: tuple[int, int, int] = (3, 32, 32), num_classes: int = 10) -> nn.Sequential:
    """He et al.'s CIFAR-10 target, "6 conv + 2 fc", with their split names conv11, ReLU22, ReLU32.

    The paper gives only conv11 = one 3x3 layer of 64 filters and ReLU22 = two 3x3 64-filter plus
    two 3x3 128-filter layers (Table 5); the third block's width (128) and fc1's (512) are ours.
    3x3 convolutions with padding 1, 2x2 max pooling after each block.
    """
    c, h, w = in_shape
    if h % 8 or w % 8:
        raise ShapeError(f"cifar_cnn needs input sides divisible by 8, got {h}x{w}")
    layers: list[tuple[str, nn.Module]] = []
    widths = [(c, 64), (64, 64), (64, 128), (128, 128), (128, 128), (128, 128)]
    for i, (cin, cout) in enumerate(widths):
        block, j = i // 2 + 1, i % 2 + 1
        layers += [(f"conv{block}{j}", nn.Conv2d(cin, cout, 3, padding=1)), (f"ReLU{block}{j}", nn.ReLU())]
        if j == 2:
            layers.append((f"pool{block}", nn.MaxPool2d(2)))
    layers += [("flatten", nn.Flatten()), ("fc1", nn.Linear(128 * (h // 8) * (w // 8), 512)), ("fc1act", nn.ReLU()),
               ("fc2", nn.Linear(512, num_classes))]
    return nn.Sequential(OrderedDict(layers))


def bn_cnn(in_shape: tuple[int, int, int] = (1, 32, 32), num_classes: int = 10, width: int = 16) -> nn.Sequential:
    c, h, w = in_shape
    if h % 8 or w % 8:
        raise ShapeError(f"bn_cnn needs height and width divisible by 8, got {h}x{w}")
    layers: list[tuple[str, nn.Module]] = []
    channels = c
    for i, out in enumerate((width, 2 * width, 4 * width), start=1):
        layers += [(f"conv{i}", nn.Conv2d(channels, out, 3, padding=1)), (f"bn{i}", nn.BatchNorm2d(out)),
                   (f"ReLU{i}", nn.ReLU()), (f"pool{i}", nn.MaxPool2d(2))]
        channels = out
    layers += [("flatten", nn.Flatten()), ("fc1", nn.Linear(channels * (h // 8) * (w // 8), 256)),
               ("fc1act", nn.ReLU()), ("fc2", nn.Linear(256, num_classes))]
    return nn.Sequential(OrderedDict(layers))


ARCHITECTURES: dict[str, Callable[..., nn.Sequential]] = {"lenet5": lenet5, "hecnn": hecnn, "mlp": mlp,
                                                          "cifar_cnn": cifar_cnn, "bn_cnn": bn_cnn}


def build_model(arch: str, in_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """Instantiate ``arch`` for inputs of shape ``in_shape`` = (C, H, W)."""
    if arch not in ARCHITECTURES:
        raise InvalidValueError(f"unknown arch '{arch}' (choose from {', '.join(ARCHITECTURES)})")
    return ARCHITECTURES[arch](tuple(int(s) for s in in_shape), int(num_classes))
