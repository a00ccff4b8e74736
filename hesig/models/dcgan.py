"""DCGAN-generator-style decoder (Radford et al. 2015, as used by Moran & Juvekar, section 4).

The input vector [n, F] is projected by a linear layer to a (4·ngf) x H/4 x W/4 tensor, then
upsampled twice by stride-2 transposed convolutions (kernel 4, padding 1) with BatchNorm and
ReLU, refined by a 3x3 convolution, and squashed by a sigmoid to images in [0, 1] of shape
[n, C, H, W]. H and W must be divisible by 4 (8, 28 and 32 all are).

``mlp`` > 0 (issue 24's capacity lever) puts that many fully connected hidden layers of width
``mlp_width`` (Linear, BatchNorm, ReLU) before the projection: the paper's generator maps the
fingerprint to its first feature map by one linear layer, so any non-linear combination of
boundary distances has to happen in the convolutions.

``res`` > 0 (the same issue's "residual blocks" lever) refines the last feature map [n, ngf, H, W]
by that many residual blocks at full resolution before the output convolution, each
``h <- ReLU(h + BN(conv3x3(ReLU(BN(conv3x3(h))))))`` (He et al. 2016): the paper's generator has one
3x3 convolution at full resolution, so fine strokes are drawn by a single layer.
"""

from __future__ import annotations

from torch import nn

from ..core.defaults import DECODER_MLP_WIDTH, MAX_DECODER_MLP, MAX_DECODER_MLP_WIDTH, MAX_DECODER_RES, NGF
from ..core.errors import InvalidValueError, ShapeError

#: Default width. Training cost grows ~ngf^2; 32 took 56 s/epoch on 54k MNIST fingerprints on
#: 2 CPU cores (results/mnist_hecnn: decoder train_seconds 1113.5 over 20 epochs).


def check_mlp(mlp) -> int:
    """The decoder's fully connected layer count: an integer in 0..MAX_DECODER_MLP (else InvalidValueError)."""
    if isinstance(mlp, bool) or int(mlp) != mlp or not 0 <= mlp <= MAX_DECODER_MLP:
        raise InvalidValueError(f"decoder mlp layers must be an integer in 0..{MAX_DECODER_MLP}, got {mlp}")
    return int(mlp)


def check_res(res) -> int:
    """The decoder's residual block count: an integer in 0..MAX_DECODER_RES (else InvalidValueError)."""
    if isinstance(res, bool) or not isinstance(res, (int, float)) or int(res) != res or not 0 <= res <= MAX_DECODER_RES:
        raise InvalidValueError(f"decoder residual blocks must be an integer in 0..{MAX_DECODER_RES}, got {res!r}")
    return int(res)


class ResidualBlock(nn.Module):
    """h [n, c, H, W] -> ReLU(h + BN(conv3x3(ReLU(BN(conv3x3(h)))))), same shape."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, h):
        return (h + self.body(h)).relu()


class DCGANDecoder(nn.Module):
    def __init__(self, in_features: int, out_shape: tuple[int, int, int], ngf: int = NGF, mlp: int = 0,
                 mlp_width: int = DECODER_MLP_WIDTH, res: int = 0):
        super().__init__()
        c, h, w = out_shape
        if h % 4 or w % 4:
            raise ShapeError(f"decoder output height and width must be divisible by 4, got {h}x{w}")
        mlp = check_mlp(mlp)
        if isinstance(mlp_width, bool) or int(mlp_width) != mlp_width or not 1 <= mlp_width <= MAX_DECODER_MLP_WIDTH:
            raise InvalidValueError(f"decoder mlp width must be an integer in 1..{MAX_DECODER_MLP_WIDTH}, got {mlp_width}")
        self.in_features, self.out_shape, self.ngf = int(in_features), (c, h, w), int(ngf)
        self.mlp, self.mlp_width = int(mlp), int(mlp_width)
        self.res = check_res(res)
        self.base = (4 * ngf, h // 4, w // 4)
        # Only when asked for: mlp = 0 keeps the paper's module names, so its checkpoints load as before.
        if self.mlp:
            layers, width = [], self.in_features
            for _ in range(self.mlp):
                layers += [nn.Linear(width, self.mlp_width, bias=False), nn.BatchNorm1d(self.mlp_width), nn.ReLU(inplace=True)]
                width = self.mlp_width
            self.lift = nn.Sequential(*layers)
        self.project = nn.Sequential(
            nn.Linear(self.mlp_width if self.mlp else in_features, 4 * ngf * (h // 4) * (w // 4), bias=False),
            nn.BatchNorm1d(4 * ngf * (h // 4) * (w // 4)), nn.ReLU(inplace=True))
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(4 * ngf, 2 * ngf, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * ngf), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * ngf, ngf, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(ngf), nn.ReLU(inplace=True),
            nn.Conv2d(ngf, c, 3, padding=1), nn.Sigmoid())
        if self.res:  # a separate module, so upsample keeps the paper's indices (and its checkpoints)
            self.refine = nn.Sequential(*(ResidualBlock(ngf) for _ in range(self.res)))

    def forward(self, z):
        """z: float32 [n, in_features] -> images float32 [n, C, H, W] in [0, 1]."""
        if z.ndim != 2 or z.shape[1] != self.in_features:
            raise ShapeError(f"decoder expects inputs [n, {self.in_features}], got {list(z.shape)}")
        if self.mlp:
            z = self.lift(z)
        h = self.project(z).view(-1, *self.base)
        if not self.res:
            return self.upsample(h)
        return self.upsample[-2:](self.refine(self.upsample[:-2](h)))
