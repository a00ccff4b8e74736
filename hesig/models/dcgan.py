"""DCGAN-generator-style decoder (Radford et al. 2015, as used by Moran & Juvekar, section 4).

The input vector [n, F] is projected by a linear layer to a (4·ngf) x H/4 x W/4 tensor, then
upsampled twice by stride-2 transposed convolutions (kernel 4, padding 1) with BatchNorm and
ReLU, refined by a 3x3 convolution, and squashed by a sigmoid to images in [0, 1] of shape
[n, C, H, W]. H and W must be divisible by 4 (8, 28 and 32 all are).
"""

from __future__ import annotations

from torch import nn

from ..core.defaults import NGF
from ..core.errors import ShapeError

#: Default width. Training cost grows ~ngf^2; 32 took 56 s/epoch on 54k MNIST fingerprints on
#: 2 CPU cores (results/mnist_hecnn: decoder train_seconds 1113.5 over 20 epochs).


class DCGANDecoder(nn.Module):
    def __init__(self, in_features: int, out_shape: tuple[int, int, int], ngf: int = NGF):
        super().__init__()
        c, h, w = out_shape
        if h % 4 or w % 4:
            raise ShapeError(f"decoder output height and width must be divisible by 4, got {h}x{w}")
        self.in_features, self.out_shape, self.ngf = int(in_features), (c, h, w), int(ngf)
        self.base = (4 * ngf, h // 4, w // 4)
        self.project = nn.Sequential(
            nn.Linear(in_features, 4 * ngf * (h // 4) * (w // 4), bias=False),
            nn.BatchNorm1d(4 * ngf * (h // 4) * (w // 4)), nn.ReLU(inplace=True))
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(4 * ngf, 2 * ngf, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * ngf), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * ngf, ngf, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(ngf), nn.ReLU(inplace=True),
            nn.Conv2d(ngf, c, 3, padding=1), nn.Sigmoid())

    def forward(self, z):
        """z: float32 [n, in_features] -> images float32 [n, C, H, W] in [0, 1]."""
        if z.ndim != 2 or z.shape[1] != self.in_features:
            raise ShapeError(f"decoder expects inputs [n, {self.in_features}], got {list(z.shape)}")
        return self.upsample(self.project(z).view(-1, *self.base))
