"""The airbench94 network (Keller Jordan, 2024): 94% on CIFAR-10 in under ten epochs.

A frozen 2x2 patch-whitening convolution, then three conv-pool-BN-GELU groups (64, 256, 256
channels) and a linear head. The whitening filters are the eigenvectors of the training
images' 2x2 patch covariance, so the network needs a sample of the data before training:
``init_from_data`` (called by the trainer for any model that defines it).
"""

from __future__ import annotations

import torch
from torch import nn

from visionops.models.registry import register_model

_WHITEN_KERNEL = 2
_WHITEN_EPS = 5e-4


# The layers are plain nn.Conv2d / nn.BatchNorm2d configured here rather than subclasses, and
# the padding is a number rather than "same": graph tools match layers by their exact type and
# op (torchao's X86 quantizer finds convolutions through ``source_fn_stack``, which records a
# subclass and so skips it, and rejects the ``aten.conv2d.padding`` op that "same" exports as).


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm with a fixed unit scale: only the bias learns (the net has few channels
    and a learned scale just fights the weight decay)."""
    # airbench's momentum 0.6 means PyTorch's 0.4: running stats follow the last batches.
    norm = nn.BatchNorm2d(channels, eps=1e-12, momentum=0.4)
    norm.weight.requires_grad_(False)
    return norm


def _conv(c_in: int, c_out: int) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False)
    with torch.no_grad():
        # Identity-initialised filters let the signal through unchanged at the start.
        nn.init.dirac_(conv.weight[:c_in])
    return conv


class _ConvGroup(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = _conv(c_in, c_out)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = _batch_norm(c_out)
        self.conv2 = _conv(c_out, c_out)
        self.norm2 = _batch_norm(c_out)
        self.activation = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.norm1(self.pool(self.conv1(x))))
        return self.activation(self.norm2(self.conv2(x)))


class AirBench(nn.Module):
    def __init__(self, num_classes: int, width_multiplier: float = 1.0) -> None:
        super().__init__()
        widths = [max(8, round(c * width_multiplier)) for c in (64, 256, 256)]
        whiten_width = 2 * 3 * _WHITEN_KERNEL**2
        self.whiten = nn.Conv2d(3, whiten_width, _WHITEN_KERNEL, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        self.activation = nn.GELU()
        self.groups = nn.Sequential(
            _ConvGroup(whiten_width, widths[0]),
            _ConvGroup(widths[0], widths[1]),
            _ConvGroup(widths[1], widths[2]),
        )
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(widths[2], num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(self.activation(self.whiten(x)))
        # Small logits at the start (airbench's 1/9) keep the early, high-lr steps stable.
        return self.head(torch.flatten(self.pool(x), 1)) / 9

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor) -> None:
        """Set the whitening filters from normalised training images (N, 3, H, W)."""
        c, k = images.shape[1], _WHITEN_KERNEL
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1).transpose(1, 3)
        patches = patches.reshape(-1, c * k * k)
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.T.flip(0)
        filters = eigenvectors.reshape(c * k * k, c, k, k) / torch.sqrt(
            eigenvalues + _WHITEN_EPS
        ).view(-1, 1, 1, 1)
        # Each direction twice, with both signs, so the GELU after it loses nothing.
        self.whiten.weight.copy_(torch.cat((filters, -filters)))


@register_model(
    "airbench",
    "airbench94: patch-whitened 3-group CNN for 32x32 images (Keller Jordan)",
    supports_width=True,
)
def airbench(num_classes: int, small_input_stem: bool, width_multiplier: float) -> nn.Module:
    return AirBench(num_classes, width_multiplier=width_multiplier)
