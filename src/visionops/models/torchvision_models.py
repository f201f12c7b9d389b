"""torchvision's ResNet-18 and MobileNetV3, randomly initialised, with optional 32x32 stems.

The ImageNet stems downsample 4x (ResNet) or 2x (MobileNetV3) before the first block, which
throws away most of a 32x32 image; the small-input stems keep full resolution there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tvm

from visionops.models.registry import register_model


class _BasicBlock(tvm.resnet.BasicBlock):
    """torchvision's block, its two activations as two calls rather than one module called
    twice: torchao's X86 quantizer rejects a module that appears twice in the graph ("Input
    partition has more than one output node"), which would leave ResNet-18 without INT8.
    Same parameters, same state dict, same outputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


@register_model("resnet18", "torchvision ResNet-18")
def resnet18(num_classes: int, small_input_stem: bool, width_multiplier: float) -> nn.Module:
    # torchvision's resnet18() is ResNet(BasicBlock, [2, 2, 2, 2]); built the same way.
    model = tvm.ResNet(_BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
    if small_input_stem:
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    return model


def _for_short_runs(model: tvm.MobileNetV3, small_input_stem: bool) -> tvm.MobileNetV3:
    """The 32x32 stem if asked for, and BatchNorm statistics that follow the weights.

    torchvision builds MobileNetV3 with BatchNorm momentum 0.01, tuned for its 600-epoch
    ImageNet recipe: after a few hundred steps the running statistics still mostly hold their
    initial values, and evaluation (which uses them) sits at chance however well the network
    fits. PyTorch's default, 0.1, lets them follow within tens of steps.
    """
    if small_input_stem:
        stem_conv = model.features[0][0]
        assert isinstance(stem_conv, nn.Conv2d)
        stem_conv.stride = (1, 1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1
    return model


@register_model("mobilenet_v3_small", "torchvision MobileNetV3-Small")
def mobilenet_v3_small(
    num_classes: int, small_input_stem: bool, width_multiplier: float
) -> nn.Module:
    model = tvm.mobilenet_v3_small(weights=None, num_classes=num_classes)
    return _for_short_runs(model, small_input_stem)


@register_model("mobilenet_v3_large", "torchvision MobileNetV3-Large")
def mobilenet_v3_large(
    num_classes: int, small_input_stem: bool, width_multiplier: float
) -> nn.Module:
    model = tvm.mobilenet_v3_large(weights=None, num_classes=num_classes)
    return _for_short_runs(model, small_input_stem)
