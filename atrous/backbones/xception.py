"""Xception (Chollet, CVPR 2017) and the aligned Xception-65/71 of DeepLab v3+ (ECCV 2018).

Both are a stem (conv 3×3/2, 32 → conv 3×3, 64) followed by Xception blocks in three
flows. A block is two or three 3×3 separable convs plus a shortcut: a strided 1×1
conv + BN (``"conv"``), the identity (``"sum"``) or none (``"none"``).

- ``xception``: Chollet's network. Entry blocks of two separable convs ending in a
  3×3/2 max-pool, 8 middle blocks, exit block 728→(728, 1024) + pool, then separable
  1536, 2048. No norm and no activation between depthwise and pointwise.
- ``xception65`` / ``xception71``: TF DeepLab's ``core/xception.py``. Every max-pool is
  replaced by a stride on the block's third separable conv, 16 middle blocks;
  Xception-71 entry flow is 128/2, 256/1, 256/2, 728/1, 728/2.

ReLU placement follows the TF reference (``activation_fn_in_separable_conv``), which is
also that of Chollet's Keras model: blocks with a shortcut are pre-activation,
``ReLU → depthwise → BN → pointwise → BN`` for each separable conv, so the shortcut
reads the un-activated block input; only the last exit block (no shortcut) has
``depthwise → BN → ReLU → pointwise → BN → ReLU`` (MobileNet style). The paper's
"extra BN and ReLU after every depthwise conv" is thus, in its own code, BN after
every depthwise conv and ReLU after it only in the last exit block; we follow the code.

Padding is symmetric ``rate·(k − 1)/2``, equal to TF's ``fixed_padding`` for odd k, so
every level has size ⌈H/stride⌉ for any H (the shortcut's stride-2 1×1 conv samples
the same pixels as the strided 3×3). BN epsilon is 1e-3 as in TF and Keras.

Features (dict returned by ``forward``; TF end-point names for the aligned models):

- ``"low"`` (OS 4): output of the second separable conv (after its pointwise BN, before
  any ReLU) of the block that goes from OS 4 to OS 8, i.e. the block's features just
  before its downsampling layer. Xception-65 and ``xception``: entry block 2, 256 ch
  (``entry_flow/block2/unit_1/xception_module/separable_conv2_pointwise``, the v3+
  decoder input); Xception-71: entry block 3, 256 ch (``entry_flow/block3/...``).
- ``"mid"`` (OS 8): the same point of the block that goes from OS 8 to OS 16: 728 ch
  (Xception-65 ``entry_flow/block3``, Xception-71 ``entry_flow/block5``).
- ``"out"``: exit-flow output after its final ReLU, 2048 ch at ``output_stride``.

Output stride: the strides of the stem and of every block go through
``plan_stages``; a block whose stride is removed runs all its layers at the rate the
network had before it, later blocks at the multiplied rate (TF ``stack_blocks_dense``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from itertools import chain

import torch
from torch import nn

from atrous.backbones._base import Backbone, FeatureInfo
from atrous.backbones._stride import multi_grid_rates, plan_stages
from atrous.errors import ConfigError
from atrous.nn import ConvNormAct, SeparableConv2d
from atrous.nn.init import he_init_
from atrous.registry import register_backbone

__all__ = ["BlockSpec", "Xception", "XceptionBlock", "xception", "xception65", "xception71"]

BatchNorm = partial(nn.BatchNorm2d, eps=1e-3)
STEM_CHANNELS = (32, 64)
DROPOUT = 0.5  # before the classifier, in both papers' ImageNet models


@dataclass(frozen=True)
class BlockSpec:
    """One Xception block: output channels of its separable convs, stride, shortcut.

    ``preact``: ReLU before each separable conv (blocks with a shortcut) instead of
    activations inside them (the last exit block).
    """

    channels: tuple[int, ...]
    stride: int
    shortcut: str = "conv"  # "conv", "sum" or "none"
    preact: bool = True


class XceptionBlock(nn.Module):
    """Separable convs ``conv1…convK`` (+ ``pool``) plus shortcut, summed.

    ``aligned``: ``stride`` on the last separable conv, BN (+ ReLU where the block
    is not pre-activation) after each depthwise conv. Otherwise (Chollet): a 3×3
    max-pool with that stride, nothing between depthwise and pointwise. ``rates``
    gives each separable conv's atrous rate; the pool uses the first one.

    Shapes: (N, in_channels, H, W) → (N, channels[-1], ⌈H/stride⌉, ⌈W/stride⌉).
    """

    def __init__(
        self,
        in_channels: int,
        spec: BlockSpec,
        *,
        stride: int,
        rates: Sequence[int],
        aligned: bool,
    ) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels = in_channels
        for i, out_channels in enumerate(spec.channels, start=1):
            if spec.preact:
                layers[f"relu{i}"] = nn.ReLU()
            last = i == len(spec.channels)
            layers[f"conv{i}"] = SeparableConv2d(
                channels,
                out_channels,
                3,
                stride=stride if last and aligned else 1,
                dilation=rates[i - 1],
                norm_layer=BatchNorm,
                activation_layer=None if spec.preact else nn.ReLU,
                act_after_depthwise=aligned,
                depthwise_norm=aligned,
            )
            channels = out_channels
        if not aligned and spec.stride > 1:
            layers["pool"] = _max_pool(stride, rates[0])
        self.layers = nn.Sequential(layers)
        self.shortcut: nn.Module | None = None
        if spec.shortcut == "conv":
            self.shortcut = ConvNormAct(
                in_channels, channels, 1, stride=stride, norm_layer=BatchNorm, activation_layer=None
            )
        elif spec.shortcut == "sum":
            self.shortcut = nn.Identity()
        self.out_channels = channels

    def forward_tap(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(block output, output of ``conv2`` — the features before downsampling)."""
        y, tap = x, x
        for name, layer in self.layers.named_children():
            y = layer(y)
            if name == "conv2":
                tap = y
        if self.shortcut is not None:
            y = y + self.shortcut(x)
        return y, tap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_tap(x)[0]


def _max_pool(stride: int, rate: int) -> nn.Module:
    """3×3 max-pool with "same" padding at atrous ``rate``.

    ``nn.MaxPool2d`` refuses padding beyond half the undilated kernel, so a dilated
    pool gets explicit −inf padding, which never wins the max (as implicit padding).
    """
    if rate == 1:
        return nn.MaxPool2d(3, stride, padding=1)
    return nn.Sequential(nn.ConstantPad2d(rate, float("-inf")), nn.MaxPool2d(3, stride, dilation=rate))


class Xception(Backbone):
    """Xception backbone: ``stem`` → ``entry_flow`` → ``middle_flow`` → ``exit_flow``.

    ``forward(x: (N, 3, H, W))`` → ``{"low": (N, 256, ⌈H/4⌉, ⌈W/4⌉), "mid": (N, 728,
    ⌈H/8⌉, ⌈W/8⌉), "out": (N, 2048, ⌈H/OS⌉, ⌈W/OS⌉)}``. With ``num_classes``,
    ``classify(x)`` → (N, num_classes): global average pool, dropout 0.5, ``fc``.

    ``output_stride``: 8, 16 or 32. ``num_classes``: size of the ImageNet classifier,
    ``None`` for features only. ``multi_grid``: unit rates of the last exit block's
    separable convs (3 aligned, 2 Chollet), multiplied by its rate; ``None`` = all 1.
    """

    classifier_prefixes = ("fc.",)
    supports_multi_grid = True  # DeepLab models leave it off unless asked (deeplab_multi_grid = None)
    separable_by_default = True

    def __init__(
        self,
        entry_blocks: Sequence[BlockSpec],
        middle_block: BlockSpec,
        middle_repeats: int,
        exit_blocks: Sequence[BlockSpec],
        *,
        aligned: bool,
        output_stride: int = 32,
        num_classes: int | None = None,
        multi_grid: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if num_classes is not None and (type(num_classes) is not int or num_classes < 1):
            raise ConfigError(f"num_classes must be a positive integer or None (features only); got {num_classes!r}")
        specs = [*entry_blocks, *([middle_block] * middle_repeats), *exit_blocks]
        plan = plan_stages([2] + [spec.stride for spec in specs], output_stride)
        # Every layer of a block runs at the rate from before its stride was removed.
        rates = [[geometry.first_dilation] * len(spec.channels) for spec, geometry in zip(specs, plan[1:])]
        rates[-1] = multi_grid_rates(plan[-1].first_dilation, multi_grid, len(specs[-1].channels))
        self.output_stride = output_stride
        self.stem = nn.Sequential(
            ConvNormAct(3, STEM_CHANNELS[0], 3, stride=plan[0].stride, norm_layer=BatchNorm),
            ConvNormAct(STEM_CHANNELS[0], STEM_CHANNELS[1], 3, norm_layer=BatchNorm),
        )
        blocks: list[XceptionBlock] = []
        channels, nominal_stride = STEM_CHANNELS[1], 2
        self._taps: dict[int, str] = {}  # block index → feature name of its conv2 output
        self.feature_info: dict[str, FeatureInfo] = {}
        for index, (spec, geometry) in enumerate(zip(specs, plan[1:])):
            block = XceptionBlock(channels, spec, stride=geometry.stride, rates=rates[index], aligned=aligned)
            if spec.stride > 1 and nominal_stride in (4, 8):
                name = "low" if nominal_stride == 4 else "mid"
                self._taps[index] = name
                self.feature_info[name] = FeatureInfo(spec.channels[1], nominal_stride)
            blocks.append(block)
            channels, nominal_stride = block.out_channels, nominal_stride * spec.stride
        self.feature_info["out"] = FeatureInfo(channels, output_stride)
        middle_end = len(entry_blocks) + middle_repeats
        self.entry_flow = nn.Sequential(*blocks[: len(entry_blocks)])
        self.middle_flow = nn.Sequential(*blocks[len(entry_blocks) : middle_end])
        self.exit_flow = nn.Sequential(*blocks[middle_end:])
        self.num_classes = num_classes
        if num_classes is not None:
            self.dropout = nn.Dropout(DROPOUT)
            self.fc = nn.Linear(channels, num_classes)
        he_init_(self)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, 3, H, W) → {"low", "mid", "out"} feature maps (see the class docstring)."""
        self.check_input(x)
        features: dict[str, torch.Tensor] = {}
        x = self.stem(x)
        for index, block in enumerate(chain(self.entry_flow, self.middle_flow, self.exit_flow)):
            if index in self._taps:
                x, features[self._taps[index]] = block.forward_tap(x)
            else:
                x = block(x)
        features["out"] = x
        return features

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet classifier form: (N, 3, H, W) → logits (N, num_classes)."""
        if self.num_classes is None:
            return super().classify(x)
        pooled = self.forward(x)["out"].mean(dim=(2, 3))
        return self.fc(self.dropout(pooled))


def _aligned(channels: int, stride: int, shortcut: str = "conv") -> BlockSpec:
    return BlockSpec((channels,) * 3, stride, shortcut)


# TF DeepLab core/xception.py: xception_65_factory / xception_71_factory.
ENTRY_65 = (_aligned(128, 2), _aligned(256, 2), _aligned(728, 2))
ENTRY_71 = (_aligned(128, 2), _aligned(256, 1), _aligned(256, 2), _aligned(728, 1), _aligned(728, 2))
MIDDLE = _aligned(728, 1, "sum")  # also Chollet's middle block
EXIT_ALIGNED = (BlockSpec((728, 1024, 1024), 2), BlockSpec((1536, 1536, 2048), 1, "none", preact=False))
# Chollet 2017, Fig. 5.
ENTRY_ORIGINAL = (BlockSpec((128, 128), 2), BlockSpec((256, 256), 2), BlockSpec((728, 728), 2))
EXIT_ORIGINAL = (BlockSpec((728, 1024), 2), BlockSpec((1536, 2048), 1, "none", preact=False))


@register_backbone("xception", deeplab=False)  # ImageNet only: DeepLab uses the aligned ones
def xception(
    *, output_stride: int = 32, num_classes: int | None = None, multi_grid: Sequence[int] | None = None
) -> Xception:
    """Chollet's Xception (max-pooling, 8 middle blocks); 22,855,952 params with 1000 classes.

    Options as in ``Xception``; ``forward`` returns {"low", "mid", "out"} features.
    """
    return Xception(
        ENTRY_ORIGINAL,
        MIDDLE,
        8,
        EXIT_ORIGINAL,
        aligned=False,
        output_stride=output_stride,
        num_classes=num_classes,
        multi_grid=multi_grid,
    )


@register_backbone("xception65")
def xception65(
    *, output_stride: int = 32, num_classes: int | None = None, multi_grid: Sequence[int] | None = None
) -> Xception:
    """Aligned Xception-65 of DeepLab v3+ (strided separable convs, 16 middle blocks).

    Options as in ``Xception``; 39,916,312 params with 1000 classes.
    """
    return Xception(
        ENTRY_65,
        MIDDLE,
        16,
        EXIT_ALIGNED,
        aligned=True,
        output_stride=output_stride,
        num_classes=num_classes,
        multi_grid=multi_grid,
    )


@register_backbone("xception71")
def xception71(
    *, output_stride: int = 32, num_classes: int | None = None, multi_grid: Sequence[int] | None = None
) -> Xception:
    """Aligned Xception-71 of DeepLab v3+ (five entry blocks, 16 middle blocks).

    Options as in ``Xception``; 42,338,736 params with 1000 classes.
    """
    return Xception(
        ENTRY_71,
        MIDDLE,
        16,
        EXIT_ALIGNED,
        aligned=True,
        output_stride=output_stride,
        num_classes=num_classes,
        multi_grid=multi_grid,
    )
