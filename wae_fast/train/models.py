"""Encoders, decoders and the latent discriminator (DCGAN-style, with batch-norm, as in the paper).

    arch            input      encoder (stride-2 convs, BN, ReLU → linear)   decoder (linear → deconvs)
    paper-mnist     1×28×28    4×4: 128, 256, 512, 1024 (28→14→7→4)         7×7×1024 → 4×4 deconvs to 512,
                                                                           256 (→28×28) → 1 channel, sigmoid
    paper-celeba    3×64×64    5×5: 128, 256, 512, 1024 (64→32→16→8→4)      8×8×1024 → 5×5 deconvs to 512,
                                                                           256, 128 (→64×64) → 3 ch., tanh
    small           1×28×28    4×4: 64, 128 (28→14→7)                       7×7×128 → 4×4 deconv to 64
                                                                           (→14) → 1 channel (→28), sigmoid
    tiny            1×28×28    4×4: 8, 16 (tests only)                      7×7×16 → 8 → 1 channel

Strided convolutions use TensorFlow's "SAME" padding (as the official code does): output = ⌈input/2⌉,
the odd pixel of padding at the bottom/right. The paper decoders end with a stride-1 "SAME" layer.

A convolution followed by a batch-norm has no bias: BN(Wx + b) = BN(Wx) in training mode (the batch mean
absorbs b) and, with the running mean shifted by b, in evaluation mode, so the function class is the
official code's. The bias's exact gradient is 0; what autograd returns for it is rounding noise, which
Adam would turn into ±lr steps that differ with the thread count.
The decoder returns pre-activations; ``Decoder.mean`` applies the output non-linearity (sigmoid for
MNIST, tanh for CelebA), so a Bernoulli VAE can use the logits directly.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# name: (in_channels, image size, kernel, encoder channels, decoder start size, decoder channels,
#        final stride-1 layer, output activation)
ARCH_SPECS = {
    "paper-mnist": dict(in_ch=1, size=28, k=4, enc=(128, 256, 512, 1024), dec_size=7,
                        dec=(1024, 512, 256), final_same=True, act="sigmoid"),
    "paper-celeba": dict(in_ch=3, size=64, k=5, enc=(128, 256, 512, 1024), dec_size=8,
                         dec=(1024, 512, 256, 128), final_same=True, act="tanh"),
    "small": dict(in_ch=1, size=28, k=4, enc=(64, 128), dec_size=7, dec=(128, 64), final_same=False,
                  act="sigmoid"),
    "tiny": dict(in_ch=1, size=28, k=4, enc=(8, 16), dec_size=7, dec=(16, 8), final_same=False,
                 act="sigmoid"),
}


def _same_pads(size: int, k: int, stride: int) -> tuple[tuple[int, int, int, int], int]:
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + k - size, 0)
    lo = total // 2
    return (lo, total - lo, lo, total - lo), out


class Conv2dSame(nn.Module):
    """Conv2d with TensorFlow "SAME" padding for a known input size."""

    def __init__(self, in_ch: int, out_ch: int, k: int, stride: int, size: int, bias: bool = True):
        super().__init__()
        pads, self.out_size = _same_pads(size, k, stride)
        self.pad = nn.ZeroPad2d(pads)
        self.conv = nn.Conv2d(in_ch, out_ch, k, stride, bias=bias)

    def forward(self, x):
        return self.conv(self.pad(x))


def _deconv2x(in_ch: int, out_ch: int, k: int, bias: bool = True) -> nn.ConvTranspose2d:
    """Transposed conv that exactly doubles the spatial size (k = 4: p = 1; k = 5: p = 2 + output_padding 1)."""
    if k % 2 == 0:
        return nn.ConvTranspose2d(in_ch, out_ch, k, 2, padding=(k - 2) // 2, bias=bias)
    return nn.ConvTranspose2d(in_ch, out_ch, k, 2, padding=(k - 1) // 2, output_padding=1, bias=bias)


class Encoder(nn.Module):
    """x [B, C, H, W] → [B, out_dim] (out_dim = d_z for WAE, 2·d_z for the VAE's mean and log-variance)."""

    def __init__(self, arch: str, out_dim: int):
        super().__init__()
        spec = ARCH_SPECS[arch]
        layers, ch, size = [], spec["in_ch"], spec["size"]
        for width in spec["enc"]:
            conv = Conv2dSame(ch, width, spec["k"], 2, size, bias=False)   # a batch-norm follows
            layers += [conv, nn.BatchNorm2d(width), nn.ReLU()]
            ch, size = width, conv.out_size
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(ch * size * size, out_dim)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class Decoder(nn.Module):
    """z [B, d_z] → pre-activation images [B, C, H, W]; ``mean(z)`` applies sigmoid / tanh."""

    def __init__(self, arch: str, d_z: int):
        super().__init__()
        spec = ARCH_SPECS[arch]
        chans, size, k = spec["dec"], spec["dec_size"], spec["k"]
        self.start = (chans[0], size, size)
        self.project = nn.Linear(d_z, chans[0] * size * size)
        layers = []
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            layers += [_deconv2x(c_in, c_out, k, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
            size *= 2
        if spec["final_same"]:
            pads, _ = _same_pads(size, k, 1)
            layers += [nn.ZeroPad2d(pads), nn.Conv2d(chans[-1], spec["in_ch"], k)]
        else:
            layers += [_deconv2x(chans[-1], spec["in_ch"], k)]
            size *= 2
        if size != spec["size"]:
            raise AssertionError(f"decoder for {arch} produces {size}×{size}, expected {spec['size']}")
        self.body = nn.Sequential(*layers)
        self.activation = spec["act"]

    def forward(self, z):
        h = F.relu(self.project(z)).view(z.shape[0], *self.start)
        return self.body(h)

    def activate(self, logits):
        return torch.sigmoid(logits) if self.activation == "sigmoid" else torch.tanh(logits)

    def mean(self, z):
        return self.activate(self(z))


class Discriminator(nn.Module):
    """Latent discriminator of WAE-GAN: ``layers`` fully connected ReLU layers and a linear logit."""

    def __init__(self, d_z: int, width: int, layers: int = 4):
        super().__init__()
        mods, dim = [], d_z
        for _ in range(layers):
            mods += [nn.Linear(dim, width), nn.ReLU()]
            dim = width
        mods.append(nn.Linear(dim, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, z):
        return self.net(z).squeeze(1)


def image_shape(arch: str) -> tuple[int, int, int]:
    spec = ARCH_SPECS[arch]
    return spec["in_ch"], spec["size"], spec["size"]
