"""timm ImageNet checkpoints: the key maps from timm's models to ours, and their published files.

Which timm models have our structure (same layers, same arithmetic), checked by tests
that compare ImageNet logits of random-init timm models with our classifier forms:

==========================  ================  ==============================================
timm model                  our backbone      key map
==========================  ================  ==============================================
``xception65``              ``xception65``    ``stem.N.conv/bn`` → ``stem.N.0/1``;
``xception71``              ``xception71``    ``blocks.I`` → ``entry_flow``/``middle_flow``/
                                              ``exit_flow.J``; ``stack.convK.conv_dw/bn_dw/
                                              conv_pw/bn_pw`` → ``layers.convK.depthwise.0/1,
                                              pointwise.0/1``; ``shortcut.conv/bn`` →
                                              ``shortcut.0/1``; ``head.fc`` → ``fc``
``mobilenetv1_100``         ``mobilenet_v1``  ``conv_stem``/``bn1`` → ``features.0.0/1``;
                                              ``blocks.S.J`` → ``features.K`` (K counts
                                              the blocks from 1); ``conv_dw/bn1/conv_pw/
                                              bn2`` → ``depthwise.0/1, pointwise.0/1``;
                                              ``classifier`` → ``classifier.1``
``mobilenetv2_100``         ``mobilenet_v2``  as v1 for the stem, blocks and classifier;
                                              inside a block torchvision's ``conv.N``
                                              names; ``conv_head``/``bn2`` → ``features.18``
``resnet50``, ``resnet101``  same names        identity (timm's ResNet names are torchvision's)
==========================  ================  ==============================================

timm's ``.tf_in1k`` Xception weights are ports of the TF DeepLab ImageNet checkpoints.
Not mapped, because the structure differs: ``mobilenetv3_large_100`` /
``mobilenetv3_small_100`` (BatchNorm eps 1e-5 where ours and torchvision's are 1e-3,
and the 1×1 head conv is applied after pooling), their ``tf_`` variants (TF "same"
padding), ``legacy_xception`` (Chollet's Xception in another layout) and ``vgg16``
(fc6/fc7 as convolutions; it is torchvision's file re-saved: load torchvision's).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from atrous.backbones._published import PublishedFile
from atrous.backbones.mobilenet_v1 import MobileNetV1
from atrous.backbones.mobilenet_v2 import MobileNetV2
from atrous.backbones.resnet import ResNet
from atrous.backbones.xception import Xception

__all__ = ["TIMM_MODELS", "convert", "published_files"]

SOURCE = "timm"
Renames = Sequence[tuple[str, str]]
StateDict = dict[str, torch.Tensor]


def _rename(key: str, renames: Renames) -> str:
    for pattern, replacement in renames:
        key = re.sub(pattern, replacement, key)
    return key


# --- aligned Xception (timm/models/xception_aligned.py) ---------------------------------

_XCEPTION = (
    (r"^stem\.(\d+)\.conv\.", r"stem.\1.0."),
    (r"^stem\.(\d+)\.bn\.", r"stem.\1.1."),
    (r"\.shortcut\.conv\.", ".shortcut.0."),
    (r"\.shortcut\.bn\.", ".shortcut.1."),
    (r"\.stack\.(conv\d)\.conv_dw\.", r".layers.\1.depthwise.0."),
    (r"\.stack\.(conv\d)\.bn_dw\.", r".layers.\1.depthwise.1."),
    (r"\.stack\.(conv\d)\.conv_pw\.", r".layers.\1.pointwise.0."),
    (r"\.stack\.(conv\d)\.bn_pw\.", r".layers.\1.pointwise.1."),
    (r"^head\.fc\.", "fc."),
)


def _xception(state_dict: Mapping[str, torch.Tensor], backbone: Xception) -> StateDict:
    """timm ``blocks.I`` are our three flows in a row; the rest renames one to one."""
    flows = [(name, len(getattr(backbone, name))) for name in ("entry_flow", "middle_flow", "exit_flow")]

    def block(match: re.Match[str]) -> str:
        index = int(match.group(1))
        for name, length in flows:
            if index < length:
                return f"{name}.{index}."
            index -= length
        return match.group(0)  # past the last flow: left as is, reported as unexpected

    return {re.sub(r"^blocks\.(\d+)\.", block, _rename(key, _XCEPTION)): value for key, value in state_dict.items()}


# --- MobileNet v1 / v2 (timm/models/efficientnet.py, _efficientnet_blocks.py) ------------

_STEM = ((r"^conv_stem\.", "features.0.0."), (r"^bn1\.", "features.0.1."), (r"^classifier\.", "classifier.1."))
# timm DepthwiseSeparableConv ("dsa": activation after the pointwise conv) → our SeparableConv2d.
_V1_BLOCK = (
    ("conv_dw.", "depthwise.0."),
    ("bn1.", "depthwise.1."),
    ("conv_pw.", "pointwise.0."),
    ("bn2.", "pointwise.1."),
)
# timm DepthwiseSeparableConv ("ds", v2's first block) → torchvision's expansion-1 InvertedResidual.
_V2_FIRST_BLOCK = (("conv_dw.", "conv.0.0."), ("bn1.", "conv.0.1."), ("conv_pw.", "conv.1."), ("bn2.", "conv.2."))
# timm InvertedResidual → torchvision's InvertedResidual.
_V2_BLOCK = (
    ("conv_pw.", "conv.0.0."), ("bn1.", "conv.0.1."), ("conv_dw.", "conv.1.0."),
    ("bn2.", "conv.1.1."), ("conv_pwl.", "conv.2."), ("bn3.", "conv.3."),
)  # fmt: skip


def _efficientnet_blocks(
    state_dict: Mapping[str, torch.Tensor],
    block_names: Callable[[set[str]], Sequence[tuple[str, str]]],
    head: Renames = (),
) -> StateDict:
    """timm's ``blocks.S.J.`` become ``features.K.`` (K = 1, 2, … over the blocks in order),
    with the layer names inside each block from ``block_names(layer names of the block)``;
    the stem, classifier and ``head`` keys rename with regular expressions."""
    pattern = re.compile(r"^blocks\.(\d+)\.(\d+)\.([^.]+\.)(.*)$")
    blocks: dict[tuple[int, int], set[str]] = {}
    for key in state_dict:
        if match := pattern.match(key):
            blocks.setdefault((int(match.group(1)), int(match.group(2))), set()).add(match.group(3))
    index = {block: position for position, block in enumerate(sorted(blocks), start=1)}
    renames = (*_STEM, *((p, r.format(last=len(blocks) + 1)) for p, r in head))
    converted = {}
    for key, value in state_dict.items():
        if match := pattern.match(key):
            block = (int(match.group(1)), int(match.group(2)))
            layer = dict(block_names(blocks[block])).get(match.group(3), match.group(3))
            key = f"features.{index[block]}.{layer}{match.group(4)}"
        else:
            key = _rename(key, renames)
        converted[key] = value
    return converted


def _mobilenet_v1(state_dict: Mapping[str, torch.Tensor], backbone: MobileNetV1) -> StateDict:
    return _efficientnet_blocks(state_dict, lambda layers: _V1_BLOCK)


def _mobilenet_v2(state_dict: Mapping[str, torch.Tensor], backbone: MobileNetV2) -> StateDict:
    return _efficientnet_blocks(
        state_dict,
        lambda layers: _V2_BLOCK if "conv_pwl." in layers else _V2_FIRST_BLOCK,
        head=((r"^conv_head\.", "features.{last}.0."), (r"^bn2\.", "features.{last}.1.")),
    )


def _identity(state_dict: Mapping[str, torch.Tensor], backbone: nn.Module) -> StateDict:
    return dict(state_dict)


@dataclass(frozen=True)
class TimmFamily:
    """A timm model family with our structure: its key map and published weights.

    ``convert(state_dict, backbone)``: the timm state_dict in our names.
    ``hub_weights``: our backbone name → timm's pretrained tags (``model.tag``, the
    Hugging Face repository ``timm/model.tag``), preferred first. ``legacy_files``:
    older GitHub-release file names timm downloads into torch.hub's cache.
    """

    convert: Callable[[Mapping[str, torch.Tensor], nn.Module], StateDict]
    hub_weights: dict[str, tuple[str, ...]]
    legacy_files: dict[str, tuple[str, ...]] | None = None


# Our backbone class → the timm family with its structure.
TIMM_MODELS: dict[type[nn.Module], TimmFamily] = {
    Xception: TimmFamily(
        _xception,  # type: ignore[arg-type]
        {"xception65": ("xception65.tf_in1k", "xception65.ra3_in1k"), "xception71": ("xception71.tf_in1k",)},
    ),
    MobileNetV1: TimmFamily(_mobilenet_v1, {"mobilenet_v1": ("mobilenetv1_100.ra4_e3600_r224_in1k",)}),  # type: ignore[arg-type]
    MobileNetV2: TimmFamily(
        _mobilenet_v2,  # type: ignore[arg-type]
        {"mobilenet_v2": ("mobilenetv2_100.ra_in1k",)},
        {"mobilenet_v2": ("mobilenetv2_100_ra-b33bc2c4.pth",)},
    ),
    ResNet: TimmFamily(
        _identity,
        {"resnet50": ("resnet50.a1_in1k", "resnet50.tv_in1k"), "resnet101": ("resnet101.a1_in1k", "resnet101.tv_in1k")},
    ),
}


def convert(state_dict: Mapping[str, torch.Tensor], backbone: nn.Module) -> StateDict | None:
    """A timm ``state_dict`` in our names, or ``None`` when no timm family has ``backbone``'s structure."""
    family = TIMM_MODELS.get(type(backbone))
    return None if family is None else family.convert(state_dict, backbone)


def published_files(backbone_name: str | None) -> list[PublishedFile]:
    """timm's ImageNet files for ``backbone_name``: Hugging Face weights, then legacy files."""
    files = []
    for family in TIMM_MODELS.values():
        for tag in family.hub_weights.get(backbone_name or "", ()):
            repo = f"timm/{tag}"
            url = f"https://huggingface.co/{repo}/resolve/main/model.safetensors"
            files.append(PublishedFile(f"{tag}.safetensors", url, SOURCE, hf_repo=repo))
        for name in (family.legacy_files or {}).get(backbone_name or "", ()):
            url = f"https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights/{name}"
            files.append(PublishedFile(name, url, SOURCE))
    return files
