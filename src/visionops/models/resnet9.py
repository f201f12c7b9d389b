"""ResNet-9: the fast residual CNN for small images (David Page's DAWNBench CIFAR-10 net).

Three stages of conv-BN-ReLU with max-pool downsampling and two residual blocks; it reaches
94% on CIFAR-10 in about ten epochs at full width and trains fast on a CPU at reduced width.
"""

from __future__ import annotations

import torch
from torch import nn

from visionops.models.registry import register_model


def _conv_bn(c_in: int, c_out: int, pool: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(channels, channels), _conv_bn(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNet9(nn.Module):
    def __init__(
        self, num_classes: int, width_multiplier: float = 1.0, small_input_stem: bool = True
    ):
        super().__init__()
        c1, c2, c3, c4 = (max(8, round(c * width_multiplier)) for c in (64, 128, 256, 512))
        # On large inputs a strided stem keeps the cost of the first layers in check.
        stem_stride = 1 if small_input_stem else 2
        self.stem = nn.Sequential(
            nn.Conv2d(3, c1, kernel_size=3, stride=stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
        )
        self.layer1 = nn.Sequential(_conv_bn(c1, c2, pool=True), _Residual(c2))
        self.layer2 = _conv_bn(c2, c3, pool=True)
        self.layer3 = nn.Sequential(_conv_bn(c3, c4, pool=True), _Residual(c4))
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(c4, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        # Page scales the logits by 1/8: with max-pooled features the raw logits start too
        # large and the first epochs are wasted shrinking them.
        return self.fc(torch.flatten(self.pool(x), 1)) * 0.125


@register_model(
    "resnet9", "Fast residual CNN for small images (Page's ResNet-9)", supports_width=True
)
def resnet9(num_classes: int, small_input_stem: bool, width_multiplier: float) -> nn.Module:
    return ResNet9(
        num_classes, width_multiplier=width_multiplier, small_input_stem=small_input_stem
    )
