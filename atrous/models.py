"""DeepLab = backbone + head (+ auxiliary head) + bilinear upsampling; the model registry.

Every version is one builder with keyword-only options, registered for every backbone
it makes sense with as ``{version}_{backbone}``:

- ``deeplabv1_vgg16_largefov`` / ``deeplabv1_vgg16``: VGG-16 at OS 8 + fc6 (3×3 r12,
  1024 ch) / (7×7 r4, 4096 ch) — :mod:`atrous.heads.largefov`.
- ``deeplabv2_*``: ASPP with summed branch logits, ASPP-L rates 6/12/18/24 or ASPP-S
  2/4/8/12, OS 8 — :class:`atrous.heads.ASPP` with ``sum_branches``.
- ``deeplabv3_*``: ASPP with image pooling, rates 6/12/18 at OS16 (doubled at OS8),
  multi-grid (1, 2, 4) on ResNet — :class:`atrous.heads.DeepLabV3Head`.
- ``deeplabv3plus_*``: v3 encoder + decoder with the 48-ch OS-4 skip, optional atrous
  separable convs — :class:`atrous.heads.DeepLabV3PlusHead`.
- ``lraspp_*``: MobileNet v3's Lite R-ASPP — :class:`atrous.heads.LRASPPHead`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from atrous.backbones._base import Backbone
from atrous.backbones._stride import check_output_stride
from atrous.crf.rnn import CRFasRNN, crf_layer_options
from atrous.errors import ConfigError
from atrous.heads import ASPP, AuxHead, DeepLabV3Head, DeepLabV3PlusHead, LargeFOV, LRASPPHead, rates_for_output_stride
from atrous.nn import resize
from atrous.nn.atrous_conv import skip_dead_taps
from atrous.nn.init import he_init_
from atrous.registry import call_checked, create_backbone, get_builder, register_model

__all__ = ["DeepLab", "create_model", "list_models", "with_output_stride"]

ASPP_V2_RATES = {"L": (6, 12, 18, 24), "S": (2, 4, 8, 12)}
ASPP_V3_RATES_OS16 = (6, 12, 18)
MULTI_GRID = (1, 2, 4)
RESNETS = ("resnet50", "resnet101")
BACKBONES = ("vgg16", *RESNETS, "xception65", "xception71", "mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small")
LIGHT_BACKBONES = ("xception65", "xception71", "mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small")


class DeepLab(nn.Module):
    """A segmentation model: (N, 3, H, W) normalised images → (N, num_classes, H, W) logits.

    ``head`` reads the backbone levels named in ``head_inputs`` (e.g. ``("out", "low")``
    for v3+) and returns logits at its own resolution, upsampled here to the input
    size. With an ``aux_head`` (on the ``aux`` level, else ``mid``) and in training
    mode, ``forward`` returns ``{"out": logits, "aux": aux_logits}``. With a ``crf``
    layer (CRF as RNN, ``create_model(..., crf=True)``) the main output is the log of the
    CRF's marginals instead of raw logits: argmax and cross-entropy apply unchanged.
    """

    def __init__(
        self,
        backbone: Backbone,
        head: nn.Module,
        *,
        head_inputs: Sequence[str] = ("out",),
        aux_head: nn.Module | None = None,
        aux_input: str = "aux",
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.aux_head = aux_head
        self.head_inputs = tuple(head_inputs)
        self.aux_input = aux_input
        self.crf: nn.Module | None = None
        self.config: dict[str, Any] = {}

    @property
    def num_classes(self) -> int:
        return int(self.config["num_classes"])

    @property
    def output_stride(self) -> int:
        return self.backbone.output_stride

    def forward_low_res(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at the head's resolution: (N, 3, H, W) → (N, num_classes, h, w)."""
        features = self.backbone(x)
        return self.head(*(features[name] for name in self.head_inputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        features = self.backbone(x)
        logits = self._upsample(self.head(*(features[name] for name in self.head_inputs)), x.shape[-2:])
        if self.crf is not None:
            logits = self.crf(x, logits)
        if self.aux_head is not None and self.training:
            aux = self._upsample(self.aux_head(features[self.aux_input]), x.shape[-2:])
            return {"out": logits, "aux": aux}
        return logits

    def _upsample(self, logits: torch.Tensor, size: torch.Size) -> torch.Tensor:
        """Head logits (N, K, h, w) → (N, K, H, W). While training they leave in NCHW: the
        loss's log-softmax and NLL over K run several times slower on channels_last (and
        NLL copies it to NCHW), and converting before upsampling moves 16× less data. At
        inference they keep the model's format, where argmax over K is the quicker."""
        return resize(logits.contiguous() if self.training else logits, size)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Backbone parameters and the rest (heads), for a head learning-rate multiplier."""
        backbone = list(self.backbone.parameters())
        ids = {id(p) for p in backbone}
        return {"backbone": backbone, "head": [p for p in self.parameters() if id(p) not in ids]}


def _init_classifiers(head: nn.Module, num_classes: int) -> None:
    """Start the convs that emit class logits near zero (std 0.01), so the first loss is ≈ log K.

    He init there gives logits of magnitude ~10 and an initial loss several times log K,
    which costs a from-scratch run its first epochs. A conv with ``num_classes`` outputs
    inside the head that is followed by BN (possible only when K equals a width) is
    unaffected in effect: BN rescales it.
    """
    for m in head.modules():
        if isinstance(m, nn.Conv2d) and m.out_channels == num_classes:
            nn.init.normal_(m.weight, 0.0, 0.01)


def _backbone(name: str, output_stride: int, pretrained_backbone: str | bool | None, **options: Any) -> Backbone:
    """Build backbone ``name``; ``pretrained_backbone`` (a path, or ``"imagenet"`` / ``True``
    for the published file in torch.hub's cache) loads ImageNet weights with
    :func:`atrous.load_backbone_weights`."""
    options = {k: v for k, v in options.items() if v is not None}
    backbone = create_backbone(name, output_stride=check_output_stride(output_stride), **options)
    if pretrained_backbone:
        from atrous.backbones.weights import load_backbone_weights

        load_backbone_weights(backbone, pretrained_backbone)
    return backbone


def _assemble(
    backbone: Backbone,
    head: nn.Module,
    num_classes: int,
    *,
    head_inputs: Sequence[str] = ("out",),
    aux_loss: bool = False,
) -> DeepLab:
    aux_input = "aux" if "aux" in backbone.feature_info else "mid"
    aux_head = AuxHead(backbone.feature_info[aux_input].channels, num_classes) if aux_loss else None
    for module in (head, aux_head):
        if module is not None:
            he_init_(module)
            _init_classifiers(module, num_classes)
    return DeepLab(backbone, head, head_inputs=head_inputs, aux_head=aux_head, aux_input=aux_input)


def deeplabv1(
    backbone: str,
    *,
    num_classes: int,
    output_stride: int = 8,
    large_fov: bool = True,
    dropout: float = 0.5,
    aux_loss: bool = False,
    pretrained_backbone: str | bool | None = None,
) -> DeepLab:
    """DeepLab v1 (Chen et al., ICLR 2015): VGG-16 at OS 8 + fc6/fc7/fc8.

    LargeFOV: fc6 3×3 rate 12, 1024 ch; the original: fc6 7×7 rate 4, 4096 ch. Rates are
    defined at OS 8 and scale with the output stride.
    """
    body = _backbone(backbone, output_stride, pretrained_backbone)
    rate, kernel, hidden = (12, 3, 1024) if large_fov else (4, 7, 4096)
    rate = max(1, rate * 8 // output_stride)
    head = LargeFOV(body.feature_info["out"].channels, num_classes, rate=rate, kernel_size=kernel, hidden_channels=hidden, dropout=dropout)
    return _assemble(body, head, num_classes, aux_loss=aux_loss)


def deeplabv2(
    backbone: str,
    *,
    num_classes: int,
    output_stride: int = 8,
    aspp: str = "L",
    aspp_rates: Sequence[int] | None = None,
    aux_loss: bool = False,
    pretrained_backbone: str | bool | None = None,
) -> DeepLab:
    """DeepLab v2 (Chen et al., TPAMI 2017): ASPP whose per-rate branch logits are summed.

    ``aspp="L"`` rates 6/12/18/24, ``"S"`` 2/4/8/12 (defined at OS 8, scaled with the
    output stride unless ``aspp_rates`` is given). On VGG-16 each branch is fc6 (3×3
    atrous, 1024) → fc7 → fc8; on other backbones a single 3×3 atrous conv.
    """
    if aspp not in ASPP_V2_RATES:
        raise ConfigError(f"aspp must be one of {', '.join(ASPP_V2_RATES)} (ASPP-L or ASPP-S); got {aspp!r}")
    body = _backbone(backbone, output_stride, pretrained_backbone)
    rates = tuple(aspp_rates) if aspp_rates else rates_for_output_stride(ASPP_V2_RATES[aspp], output_stride, 8)
    branch = _largefov_branch if backbone == "vgg16" else None
    head = ASPP(body.feature_info["out"].channels, num_classes, rates, sum_branches=True, branch=branch)
    return _assemble(body, head, num_classes, aux_loss=aux_loss)


def _largefov_branch(in_channels: int, num_classes: int, rate: int) -> nn.Module:
    return LargeFOV(in_channels, num_classes, rate=rate)


def deeplabv3(
    backbone: str,
    *,
    num_classes: int,
    output_stride: int = 16,
    aspp_rates: Sequence[int] | None = None,
    multi_grid: Sequence[int] | None = MULTI_GRID,
    image_pool: bool = True,
    separable: bool = False,
    refine_conv: bool = False,
    dropout: float = 0.1,
    aux_loss: bool = False,
    pretrained_backbone: str | bool | None = None,
) -> DeepLab:
    """DeepLab v3 (Chen et al., 2017), parallel form: backbone + ASPP with image pooling.

    ASPP rates (6, 12, 18) at OS16 scale with the output stride (12, 24, 36 at OS8)
    unless ``aspp_rates`` is given; ResNet's last stage uses ``multi_grid`` unit rates.
    ``refine_conv`` adds torchvision's extra 3×3 conv before the classifier.
    """
    body = _backbone(backbone, output_stride, pretrained_backbone, multi_grid=_multi_grid_for(backbone, multi_grid))
    rates = tuple(aspp_rates) if aspp_rates is not None else rates_for_output_stride(ASPP_V3_RATES_OS16, output_stride)
    head = DeepLabV3Head(
        body.feature_info["out"].channels,
        num_classes,
        rates,
        image_pool=image_pool,
        separable=separable,
        refine_conv=refine_conv,
        dropout=dropout,
    )
    return _assemble(body, head, num_classes, aux_loss=aux_loss)


def deeplabv3plus(
    backbone: str,
    *,
    num_classes: int,
    output_stride: int = 16,
    aspp_rates: Sequence[int] | None = None,
    multi_grid: Sequence[int] | None = MULTI_GRID,
    image_pool: bool = True,
    separable: bool | None = None,
    low_level_channels: int = 48,
    decoder_convs: int = 2,
    dropout: float = 0.1,
    aux_loss: bool = False,
    pretrained_backbone: str | bool | None = None,
) -> DeepLab:
    """DeepLab v3+ (Chen et al., ECCV 2018): v3 encoder + decoder with an OS-4 skip.

    ``decoder_convs``: 3×3 convs refining the fused features (2 in the paper; 1 is
    segmentation-models-pytorch's lighter decoder).

    ``separable`` (atrous separable convs in ASPP and decoder) defaults to True on the
    Xception and MobileNet backbones, as in the paper's Xception model, else False.
    """
    body = _backbone(backbone, output_stride, pretrained_backbone, multi_grid=_multi_grid_for(backbone, multi_grid))
    rates = tuple(aspp_rates) if aspp_rates is not None else rates_for_output_stride(ASPP_V3_RATES_OS16, output_stride)
    head = DeepLabV3PlusHead(
        body.feature_info["out"].channels,
        body.feature_info["low"].channels,
        num_classes,
        rates,
        low_level_channels=low_level_channels,
        decoder_convs=decoder_convs,
        image_pool=image_pool,
        separable=backbone in LIGHT_BACKBONES if separable is None else separable,
        dropout=dropout,
    )
    return _assemble(body, head, num_classes, head_inputs=("out", "low"), aux_loss=aux_loss)


def lraspp(
    backbone: str,
    *,
    num_classes: int,
    output_stride: int = 16,
    channels: int = 128,
    aux_loss: bool = False,
    pretrained_backbone: str | bool | None = None,
) -> DeepLab:
    """Lite R-ASPP (Howard et al., "Searching for MobileNetV3", 2019) on the OS-8 and final levels."""
    body = _backbone(backbone, output_stride, pretrained_backbone)
    head = LRASPPHead(body.feature_info["out"].channels, body.feature_info["mid"].channels, num_classes, channels=channels)
    return _assemble(body, head, num_classes, head_inputs=("out", "mid"), aux_loss=aux_loss)


def _multi_grid_for(backbone: str, multi_grid: Sequence[int] | None) -> tuple[int, ...] | None:
    """Multi-grid applies to ResNet's last stage only; ``None`` elsewhere."""
    if backbone not in RESNETS:
        if multi_grid is not None and tuple(multi_grid) != MULTI_GRID:
            raise ConfigError(f"multi_grid applies to ResNet backbones ({', '.join(RESNETS)}) only; {backbone} has none")
        return None
    return tuple(multi_grid) if multi_grid is not None else None


def _register_family() -> None:
    register_model("deeplabv1_vgg16_largefov")(functools.partial(deeplabv1, "vgg16", large_fov=True))
    register_model("deeplabv1_vgg16")(functools.partial(deeplabv1, "vgg16", large_fov=False))
    for name in BACKBONES:
        register_model(f"deeplabv2_{name}")(functools.partial(deeplabv2, name))
        register_model(f"deeplabv3_{name}")(functools.partial(deeplabv3, name))
        register_model(f"deeplabv3plus_{name}")(functools.partial(deeplabv3plus, name))
    for name in ("mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small"):
        register_model(f"lraspp_{name}")(functools.partial(lraspp, name))


_register_family()


def create_model(name: str, *, num_classes: int, output_stride: int | None = None, **options: Any) -> DeepLab:
    """Build a registered model, e.g. ``create_model("deeplabv3plus_resnet50", num_classes=21)``.

    ``output_stride`` defaults to the version's own (8 for v1/v2, 16 for v3/v3+/LR-ASPP).
    ``crf=True`` (or a dict of ``CRFasRNN`` options, e.g. ``{"iterations": 5, "matrix":
    True}``) ends the model with a trainable dense CRF (CRF as RNN), trained end to end.
    Unknown names or options raise ``ConfigError`` listing the valid ones.
    """
    builder = get_builder("model", name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be an integer ≥ 1; got {num_classes!r}")
    if output_stride is not None:
        options["output_stride"] = check_output_stride(output_stride)
    crf_options = crf_layer_options(options.pop("crf", None))
    model = skip_dead_taps(call_checked("model", name, builder, {"num_classes": num_classes, **options}))
    if crf_options is not None:
        model.crf = CRFasRNN(num_classes, **crf_options)
        options["crf"] = crf_options
    # The weights file is not part of the architecture: a rebuilt model gets its weights from a checkpoint.
    options.pop("pretrained_backbone", None)
    model.config = {"name": name, "num_classes": num_classes, "output_stride": model.output_stride, **options}
    return model


def list_models() -> list[str]:
    """All registered model names, sorted."""
    from atrous.registry import list_models as _list

    return _list()


def with_output_stride(model: DeepLab, output_stride: int) -> DeepLab:
    """The same weights rebuilt at another output stride (e.g. train OS16, evaluate OS8).

    Atrous rates that were derived from the output stride (ASPP, LargeFOV) follow it.
    Non-parameter attributes set on ``model`` (class names, palette …) are carried over.
    """
    rebuilt = create_model(**{**model.config, "output_stride": output_stride})
    rebuilt.load_state_dict(model.state_dict())
    for key in ("class_names", "palette", "mean", "std", "ignore_index"):
        if hasattr(model, key):
            setattr(rebuilt, key, getattr(model, key))
    return rebuilt.train(model.training)
