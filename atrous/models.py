"""The model registry: one builder per DeepLab version, assembled into a :class:`DeepLab`.

Every version is one builder with keyword-only options, registered for every backbone
it makes sense with as ``{version}_{backbone}``:

- ``deeplabv1_vgg16_largefov`` / ``deeplabv1_vgg16``: VGG-16 at OS 8 + fc6 (3×3 r12,
  1024 ch) / (7×7 r4, 4096 ch), ``msc=True`` adding the multi-scale features —
  :mod:`atrous.heads.largefov`.
- ``deeplabv2_*``: ASPP with summed branch logits, ASPP-L rates 6/12/18/24 or ASPP-S
  2/4/8/12, OS 8 — :class:`atrous.heads.ASPP` with ``sum_branches``.
- ``deeplabv3_*``: ASPP with image pooling, rates 6/12/18 at OS16 (doubled at OS8),
  multi-grid (1, 2, 4) on ResNet — :class:`atrous.heads.DeepLabV3Head`; or, with
  ``cascade_blocks=N`` on ResNet, block4 copied N times in cascade and a 1×1 classifier.
- ``deeplabv3plus_*``: v3 encoder + decoder with the 48-ch OS-4 skip, optional atrous
  separable convs — :class:`atrous.heads.DeepLabV3PlusHead`.
- ``lraspp_*``: MobileNet v3's Lite R-ASPP — :class:`atrous.heads.LRASPPHead`.

Every builder also takes the options every model has, handed to the :class:`DeepLab`
it constructs: ``input_scales`` (DeepLab v2's multi-scale inputs, max-fused inside the
model and trained with it, :mod:`atrous.multiscale`; not the ``Predictor``'s ``scales``,
test-time views whose probabilities are averaged), ``crf`` (CRF as RNN,
:mod:`atrous.crf.rnn`), ``activation_quant`` (an imported graph's uint8 activation
grids, :mod:`atrous.nn.fake_quant`) and ``config`` (the rebuild recipe ``create_model``
records: its name and options).
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, NamedTuple

from torch import nn

from atrous.backbones._base import Backbone, FeatureInfo
from atrous.crf.rnn import CRFasRNN, crf_layer_options
from atrous.deeplab import DeepLab
from atrous.errors import ConfigError
from atrous.heads import (
    ASPP,
    AuxHead,
    CascadeHead,
    DeepLabV3Head,
    DeepLabV3PlusHead,
    LargeFOV,
    LRASPPHead,
    pooling_window,
    rates_for_output_stride,
)
from atrous.limits import AtLeast, InRange, check_model_memory
from atrous.multiscale import PAPER_SCALES, input_scales_option
from atrous.nn.fake_quant import activation_quant_option
from atrous.nn.init import he_init_
from atrous.registry import (
    backbone_class,
    call_checked,
    create_backbone,
    deeplab_backbones,
    get_builder,
    on_deeplab_backbone,
    register_model,
)
from atrous.strides import check_output_stride

__all__ = [
    "PAPER_VARIANTS", "create_model", "deeplabv1", "deeplabv2", "deeplabv3", "deeplabv3plus", "format_options", "lraspp",
    "scoped_options", "with_options", "with_output_stride",
]  # fmt: skip

ASPP_V2_RATES = {"L": (6, 12, 18, 24), "S": (2, 4, 8, 12)}
ASPP_V3_RATES_OS16 = (6, 12, 18)
_Probability = Annotated[float, InRange(0, 1)]
DEFAULT = "default"  # an option left to the backbone class's declared default (``multi_grid``)


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


def _backbone(
    name: str,
    output_stride: int,
    pretrained_backbone: str | bool | None,
    backbone_options: dict[str, Any] | None = None,
    **options: Any,
) -> Backbone:
    """Build backbone ``name``; ``backbone_options`` (e.g. ``{"width_mult": 0.5}``) are
    checked against the backbone builder's own options, so a wrong one is refused.
    ``pretrained_backbone`` (a path, or ``"imagenet"`` / ``True`` for the published file in
    torch.hub's cache) loads ImageNet weights with :func:`atrous.load_backbone_weights`."""
    options = {k: v for k, v in options.items() if v is not None}
    backbone = create_backbone(
        name, output_stride=check_output_stride(output_stride), **options, **dict(backbone_options or {})
    )
    if pretrained_backbone:
        from atrous.backbones.weights import load_backbone_weights

        load_backbone_weights(backbone, pretrained_backbone)
    return backbone


class _ModelWide(NamedTuple):
    """The options every model has (see the module docstring), passed through to ``DeepLab``."""

    crf: bool | Mapping[str, Any] | None
    input_scales: Sequence[float] | None
    activation_quant: Mapping[str, Any] | None
    config: Mapping[str, Any] | None


def _assemble(
    backbone: Backbone,
    head: nn.Module,
    num_classes: int,
    model_wide: _ModelWide,
    *,
    head_inputs: Sequence[str] = ("out",),
    aux_loss: bool = False,
    align_corners: bool = False,
) -> DeepLab:
    aux_input = "aux" if "aux" in backbone.feature_info else "mid"
    aux_head = AuxHead(backbone.feature_info[aux_input].channels, num_classes) if aux_loss else None
    for module in (head, aux_head):
        if module is not None:
            he_init_(module)
            _init_classifiers(module, num_classes)
    crf_options = crf_layer_options(model_wide.crf)
    return DeepLab(
        backbone,
        head,
        head_inputs=head_inputs,
        aux_head=aux_head,
        aux_input=aux_input,
        align_corners=align_corners,
        num_classes=num_classes,
        crf=CRFasRNN(num_classes, **crf_options) if crf_options is not None else None,
        input_scales=input_scales_option(model_wide.input_scales),
        activation_quant=activation_quant_option(model_wide.activation_quant),
        config=model_wide.config,
    )


def deeplabv1(
    backbone: str,
    *,
    num_classes: int,
    output_stride: int = 8,
    large_fov: bool = True,
    dropout: _Probability = 0.5,
    msc: bool = False,
    aux_loss: bool = False,
    pretrained_backbone: str | bool | None = None,
    backbone_options: dict[str, Any] | None = None,
    align_corners: bool = False,
    crf: bool | Mapping[str, Any] | None = None,
    input_scales: Sequence[float] | None = None,
    activation_quant: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
) -> DeepLab:
    """DeepLab v1 (Chen et al., ICLR 2015): VGG-16 at OS 8 + fc6/fc7/fc8.

    LargeFOV: fc6 3×3 rate 12, 1024 ch; the original: fc6 7×7 rate 4, 4096 ch. Rates are
    defined at OS 8 and scale with the output stride. ``msc=True`` adds the multi-scale
    features (DeepLab-MSc, §4): a 128-128 MLP on the image and on pool1..pool4, each
    strided to the output stride, concatenated with fc7 (640 more channels into fc8).
    """
    if not isinstance(msc, bool):
        raise ConfigError(f"msc must be true or false; got {msc!r}")
    body = _backbone(backbone, output_stride, pretrained_backbone, backbone_options, pool_levels=msc)
    rate, kernel, hidden = (12, 3, 1024) if large_fov else (4, 7, 4096)
    rate = max(1, rate * 8 // output_stride)
    msc_levels = ("image", "pool1", "pool2", "pool3", "pool4") if msc else ()
    head = LargeFOV(
        body.feature_info["out"].channels,
        num_classes,
        rate=rate,
        kernel_size=kernel,
        hidden_channels=hidden,
        dropout=dropout,
        msc_inputs=[_level(body, name, output_stride) for name in msc_levels],
    )
    model_wide = _ModelWide(crf, input_scales, activation_quant, config)
    return _assemble(
        body,
        head,
        num_classes,
        model_wide,
        head_inputs=("out", *msc_levels),
        aux_loss=aux_loss,
        align_corners=align_corners,
    )


def _level(body: Backbone, name: str, output_stride: int) -> tuple[int, int]:
    """(channels, stride that brings it to ``output_stride``) of a backbone level or of the RGB ``"image"``."""
    info = FeatureInfo(3, 1) if name == "image" else body.feature_info[name]
    return info.channels, output_stride // info.stride


def deeplabv2(
    backbone: str,
    *,
    num_classes: int,
    output_stride: int = 8,
    aspp: str = "L",
    aspp_rates: Sequence[int] | None = None,
    aux_loss: bool = False,
    pretrained_backbone: str | bool | None = None,
    backbone_options: dict[str, Any] | None = None,
    align_corners: bool = False,
    crf: bool | Mapping[str, Any] | None = None,
    input_scales: Sequence[float] | None = None,
    activation_quant: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
) -> DeepLab:
    """DeepLab v2 (Chen et al., TPAMI 2017): ASPP whose per-rate branch logits are summed.

    ``aspp="L"`` rates 6/12/18/24, ``"S"`` 2/4/8/12 (defined at OS 8, scaled with the
    output stride unless ``aspp_rates`` is given). On VGG-16 each branch is fc6 (3×3
    atrous, 1024) → fc7 → fc8; on other backbones a single 3×3 atrous conv.
    """
    if aspp not in ASPP_V2_RATES:
        raise ConfigError(f"aspp must be one of {', '.join(ASPP_V2_RATES)} (ASPP-L or ASPP-S); got {aspp!r}")
    body = _backbone(backbone, output_stride, pretrained_backbone, backbone_options)
    rates = _rates(aspp_rates) if aspp_rates else rates_for_output_stride(ASPP_V2_RATES[aspp], output_stride, 8)
    branch = _largefov_branch if backbone_class(backbone).largefov_branches else None
    head = ASPP(body.feature_info["out"].channels, num_classes, rates, sum_branches=True, branch=branch)
    model_wide = _ModelWide(crf, input_scales, activation_quant, config)
    return _assemble(body, head, num_classes, model_wide, aux_loss=aux_loss, align_corners=align_corners)


def _largefov_branch(in_channels: int, num_classes: int, rate: int) -> nn.Module:
    return LargeFOV(in_channels, num_classes, rate=rate)


def deeplabv3(
    backbone: str,
    *,
    num_classes: int,
    output_stride: int = 16,
    aspp_rates: Sequence[int] | None = None,
    aspp_channels: int = 256,
    multi_grid: Sequence[int] | str | None = DEFAULT,
    image_pool: bool | None = None,
    image_pool_crop: int | Sequence[int] | None = None,
    separable: bool = False,
    refine_conv: bool = False,
    dropout: _Probability = 0.1,
    cascade_blocks: Annotated[int, AtLeast(0)] = 0,
    aux_loss: bool = False,
    pretrained_backbone: str | bool | None = None,
    backbone_options: dict[str, Any] | None = None,
    align_corners: bool = False,
    crf: bool | Mapping[str, Any] | None = None,
    input_scales: Sequence[float] | None = None,
    activation_quant: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
) -> DeepLab:
    """DeepLab v3 (Chen et al., 2017): the parallel form (ASPP) or the cascade form.

    Parallel (§3.3, the default): backbone + ASPP with image pooling (``image_pool``,
    default True). ASPP rates (6, 12, 18) at OS16 scale with the output stride (12, 24,
    36 at OS8) unless ``aspp_rates`` is given; ``aspp_channels`` is the width of every
    branch and of the projection (256; TF DeepLab's "slim" MobileNet-EdgeTPU head uses 128). ``multi_grid``: unit rates of the
    backbone's last stage, for backbones that support it (ResNet, Xception); by default
    the backbone class's ``deeplab_multi_grid`` ((1, 2, 4) on ResNet, none on Xception),
    ``None`` for none; refused on backbones without multi-grid. ``refine_conv`` adds
    torchvision's extra 3×3 conv before the classifier. ``image_pool_crop`` (pixels, S
    or (H, W); TF DeepLab's ``image_pooling_crop_size``): image pooling averages over a
    window that size instead of the whole map, so a model trained on such crops sees
    the same image-level feature on larger test frames.

    Cascade (§3.2, ResNet only): ``cascade_blocks=N`` appends N copies of block4 as
    block5 … block(4+N) at OS 16, each block's rate doubling (4, 8, 16 …) and
    ``multi_grid`` applied within each. On top sits only dropout + a 1×1 classifier
    (:class:`atrous.heads.CascadeHead`), no ASPP: the paper evaluates the cascade this
    way (Tables 1–3) as the alternative to ASPP, so ``aspp_rates``, ``image_pool``,
    ``separable`` and ``refine_conv`` are refused with it.
    """
    cascade = _cascade_for(backbone, cascade_blocks)
    model_wide = _ModelWide(crf, input_scales, activation_quant, config)
    body = _backbone(
        backbone,
        output_stride,
        pretrained_backbone,
        backbone_options,
        multi_grid=_multi_grid_for(backbone, multi_grid),
        cascade_blocks=cascade,
    )
    if cascade:
        aspp_options = {
            "aspp_rates": aspp_rates,
            "aspp_channels": None if aspp_channels == 256 else aspp_channels,
            "image_pool": image_pool,
            "image_pool_crop": image_pool_crop,
            "separable": separable or None,
            "refine_conv": refine_conv or None,
        }
        given = [name for name, value in aspp_options.items() if value is not None]
        if given:
            raise ConfigError(
                f"{', '.join(given)} shape ASPP, which the cascade model (cascade_blocks={cascade}) does not have: "
                "v3's cascade ends in a 1×1 classifier (§3.2, Tables 1–3); leave them out"
            )
        cascade_head = CascadeHead(body.feature_info["out"].channels, num_classes, dropout=dropout)
        return _assemble(body, cascade_head, num_classes, model_wide, aux_loss=aux_loss, align_corners=align_corners)
    rates = _rates(aspp_rates) if aspp_rates is not None else rates_for_output_stride(ASPP_V3_RATES_OS16, output_stride)
    head = DeepLabV3Head(
        body.feature_info["out"].channels,
        num_classes,
        rates,
        channels=_positive_width("aspp_channels", aspp_channels),
        image_pool=True if image_pool is None else image_pool,
        image_pool_window=_image_pool_window(image_pool is not False, image_pool_crop, output_stride),
        separable=separable,
        refine_conv=refine_conv,
        dropout=dropout,
    )
    return _assemble(body, head, num_classes, model_wide, aux_loss=aux_loss, align_corners=align_corners)


def _rates(aspp_rates: Sequence[int]) -> tuple[int, ...]:
    """The checked ``aspp_rates``: atrous rates (dilations) ≥ 1."""
    rates = tuple(aspp_rates)
    if any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in rates):
        raise ConfigError(f"aspp_rates must be atrous rates ≥ 1 such as [6, 12, 18]; got {list(aspp_rates)!r}")
    return rates


def _positive_width(option: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{option} must be a positive integer (channels); got {value!r}")
    return value


def _image_pool_window(
    image_pool: bool, crop: int | Sequence[int] | None, output_stride: int
) -> tuple[int, int] | None:
    if crop is not None and not image_pool:
        raise ConfigError("image_pool_crop sets the image pooling window, but image_pool=False removes that branch")
    return pooling_window(crop, output_stride)


def deeplabv3plus(
    backbone: str,
    *,
    num_classes: int,
    output_stride: int = 16,
    aspp_rates: Sequence[int] | None = None,
    aspp_channels: int = 256,
    multi_grid: Sequence[int] | str | None = DEFAULT,
    image_pool: bool = True,
    image_pool_crop: int | Sequence[int] | None = None,
    separable: bool | None = None,
    low_level_channels: Annotated[int, AtLeast(1)] = 48,
    decoder_convs: int = 2,
    dropout: _Probability = 0.1,
    aux_loss: bool = False,
    pretrained_backbone: str | bool | None = None,
    backbone_options: dict[str, Any] | None = None,
    align_corners: bool = False,
    crf: bool | Mapping[str, Any] | None = None,
    input_scales: Sequence[float] | None = None,
    activation_quant: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
) -> DeepLab:
    """DeepLab v3+ (Chen et al., ECCV 2018): v3 encoder + decoder with an OS-4 skip.

    ``aspp_channels``: width of ASPP and the decoder (256). ``decoder_convs``: 3×3 convs refining the fused features (2 in the paper; 1 is
    segmentation-models-pytorch's lighter decoder).

    ``separable`` (atrous separable convs in ASPP and decoder) defaults to the backbone
    class's ``separable_by_default`` (True on Xception and the MobileNets, as in the
    paper's Xception model, else False). ``multi_grid`` and ``image_pool_crop`` as in
    :func:`deeplabv3`.
    """
    body = _backbone(
        backbone, output_stride, pretrained_backbone, backbone_options, multi_grid=_multi_grid_for(backbone, multi_grid)
    )
    rates = _rates(aspp_rates) if aspp_rates is not None else rates_for_output_stride(ASPP_V3_RATES_OS16, output_stride)
    head = DeepLabV3PlusHead(
        body.feature_info["out"].channels,
        body.feature_info["low"].channels,
        num_classes,
        rates,
        channels=_positive_width("aspp_channels", aspp_channels),
        low_level_channels=low_level_channels,
        decoder_convs=decoder_convs,
        image_pool=image_pool,
        image_pool_window=_image_pool_window(image_pool, image_pool_crop, output_stride),
        separable=backbone_class(backbone).separable_by_default if separable is None else separable,
        dropout=dropout,
    )
    model_wide = _ModelWide(crf, input_scales, activation_quant, config)
    return _assemble(
        body, head, num_classes, model_wide, head_inputs=("out", "low"), aux_loss=aux_loss, align_corners=align_corners
    )


def lraspp(
    backbone: str,
    *,
    num_classes: int,
    output_stride: int = 16,
    channels: Annotated[int, AtLeast(1)] = 128,
    aux_loss: bool = False,
    pretrained_backbone: str | bool | None = None,
    backbone_options: dict[str, Any] | None = None,
    align_corners: bool = False,
    crf: bool | Mapping[str, Any] | None = None,
    input_scales: Sequence[float] | None = None,
    activation_quant: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
) -> DeepLab:
    """Lite R-ASPP (Howard et al., "Searching for MobileNetV3", 2019) on the OS-8 and final levels."""
    body = _backbone(backbone, output_stride, pretrained_backbone, backbone_options)
    head = LRASPPHead(
        body.feature_info["out"].channels, body.feature_info["mid"].channels, num_classes, channels=channels
    )
    model_wide = _ModelWide(crf, input_scales, activation_quant, config)
    return _assemble(
        body, head, num_classes, model_wide, head_inputs=("out", "mid"), aux_loss=aux_loss, align_corners=align_corners
    )


def _multi_grid_for(backbone: str, multi_grid: Sequence[int] | str | None) -> tuple[int, ...] | None:
    """The ``multi_grid`` to build ``backbone`` with, from what its class declares.

    ``DEFAULT``: the class's ``deeplab_multi_grid``; ``None``: none; unit rates: given to a
    backbone whose class ``supports_multi_grid`` (its builder takes them), refused
    (``ConfigError``) by any other — never dropped.
    """
    cls = backbone_class(backbone)
    if isinstance(multi_grid, str):
        if multi_grid != DEFAULT:
            raise ConfigError(
                f"multi_grid must be unit rates such as [1, 2, 4], null or {DEFAULT!r}; got {multi_grid!r}"
            )
        return cls.deeplab_multi_grid
    if multi_grid is None:
        return None
    if not cls.supports_multi_grid:
        with_it = [name for name in deeplab_backbones() if backbone_class(name).supports_multi_grid]
        raise ConfigError(
            f"multi_grid (unit rates of the last stage) applies to {', '.join(with_it)}; {backbone} has no multi-grid, "
            "leave it out"
        )
    return tuple(int(rate) for rate in multi_grid)


def _cascade_for(backbone: str, cascade_blocks: int) -> int | None:
    """The checked ``cascade_blocks`` (``None`` for 0: the plain model, no cascade)."""
    if isinstance(cascade_blocks, bool) or not isinstance(cascade_blocks, int) or cascade_blocks < 0:
        raise ConfigError(f"cascade_blocks must be an integer ≥ 0 (copies of ResNet block4); got {cascade_blocks!r}")
    if cascade_blocks and not backbone_class(backbone).supports_cascade:
        with_it = [name for name in deeplab_backbones() if backbone_class(name).supports_cascade]
        raise ConfigError(
            f"cascade_blocks (copies of ResNet block4) applies to {', '.join(with_it)} only, not {backbone}"
        )
    return cascade_blocks or None


# The versions a backbone class may declare in ``deeplab_versions``, by name prefix.
VERSION_BUILDERS: dict[str, Callable[..., DeepLab]] = {
    "deeplabv2": deeplabv2, "deeplabv3": deeplabv3, "deeplabv3plus": deeplabv3plus, "lraspp": lraspp,
}  # fmt: skip


def _register_versions(backbone: str) -> None:
    """Register ``{version}_{backbone}`` for every version the backbone's class declares."""
    for version in backbone_class(backbone).deeplab_versions:
        register_model(f"{version}_{backbone}")(functools.partial(VERSION_BUILDERS[version], backbone))


# v1 exists on VGG-16 only (its fc6/fc7 are VGG's); every other version follows the registry,
# so a backbone registered later (one new file) gets its models too.
register_model("deeplabv1_vgg16_largefov")(functools.partial(deeplabv1, "vgg16", large_fov=True))
register_model("deeplabv1_vgg16")(functools.partial(deeplabv1, "vgg16", large_fov=False))
on_deeplab_backbone(_register_versions)


def create_model(name: str, *, num_classes: int, output_stride: int | None = None, **options: Any) -> DeepLab:
    """Build a registered model, e.g. ``create_model("deeplabv3plus_resnet50", num_classes=21)``.

    ``output_stride`` defaults to the version's own (8 for v1/v2, 16 for v3/v3+/LR-ASPP).
    ``crf=True`` (or a dict of ``CRFasRNN`` options, e.g. ``{"iterations": 5, "matrix":
    True}``) ends the model with a trainable dense CRF (CRF as RNN), trained end to end.
    ``input_scales=(1.0, 0.75, 0.5)`` runs any model on DeepLab v2's multi-scale inputs
    with max fusion (:mod:`atrous.multiscale`). ``activation_quant`` reproduces the uint8
    activation grids of a quantisation-aware trained import (:mod:`atrous.nn.fake_quant`). Options of one version only —
    ``msc`` (v1 on VGG-16), ``cascade_blocks`` (v3 on ResNet) — are refused elsewhere.
    Unknown names or options raise ``ConfigError`` listing the valid ones.
    """
    builder = get_builder("model", name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be an integer ≥ 1; got {num_classes!r}")
    if "config" in options:
        raise ConfigError("config is the record create_model keeps of a model's options; pass the options themselves")
    _check_option_scope(name, options)
    model_wide = {
        "activation_quant": activation_quant_option(options.pop("activation_quant", None)),
        "crf": crf_layer_options(options.pop("crf", None)),
        "input_scales": input_scales_option(options.pop("input_scales", None)),
    }
    if output_stride is None:
        output_stride = _default_output_stride(builder)
    recorded = {key: value for key, value in options.items() if key != "pretrained_backbone"}
    # The weights file is not part of the architecture: a rebuilt model gets its weights from a checkpoint.
    config = {"name": name, "num_classes": num_classes, "output_stride": output_stride, **recorded}
    grids = model_wide["activation_quant"]
    if grids is not None:
        config["activation_quant"] = {path: [list(grid) for grid in path_grids] for path, path_grids in grids.items()}
    for key in ("crf", "input_scales"):
        if model_wide[key] is not None:
            config[key] = model_wide[key]
    if output_stride is not None:
        options["output_stride"] = check_output_stride(output_stride)
    arguments = {"num_classes": num_classes, **options, **model_wide, "config": config}
    # Shapes first (meta device, no storage, no weights file read): a model too large is refused before allocation.
    # The model-wide extras (CRF, activation grids) are left out there: they are small and read values.
    shapes_only = {**arguments, "crf": None, "activation_quant": None}
    if "pretrained_backbone" in arguments:
        shapes_only["pretrained_backbone"] = None
    given = ", ".join(f"{key}={value!r}" for key, value in {"num_classes": num_classes, **options}.items())
    check_model_memory(f"{name} ({given})", lambda: call_checked("model", name, builder, shapes_only))
    return call_checked("model", name, builder, arguments)


def _default_output_stride(builder: Callable[..., Any]) -> int | None:
    """The ``output_stride`` a builder defaults to (None for a builder without that option)."""
    parameter = inspect.signature(builder).parameters.get("output_stride")
    return None if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default


# Options that exist for some models only: (models that take it, what it is).
def scoped_options() -> dict[str, tuple[tuple[str, ...], str]]:
    """Options that exist for some models only: option → (models that take it, what it is)."""
    cascading = tuple(f"deeplabv3_{name}" for name in deeplab_backbones() if backbone_class(name).supports_cascade)
    return {
        "msc": (("deeplabv1_vgg16", "deeplabv1_vgg16_largefov"), "DeepLab v1's multi-scale features"),
        "cascade_blocks": (cascading, "DeepLab v3's cascaded copies of ResNet block4"),
    }


def _check_option_scope(name: str, options: dict[str, Any]) -> None:
    """Refuse a version-specific option on a model it does not apply to, saying where it applies."""
    for option, (models, what) in scoped_options().items():
        if option in options and name not in models:
            raise ConfigError(f"{option} ({what}) applies to {', '.join(models)} only, not to {name}")


# The papers' variants that are options of a registered model rather than names of their
# own: README rows and ``atrous list --variants``.
PAPER_VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("deeplabv1_vgg16", {"msc": True}),  # v1 §4: DeepLab-MSc
    ("deeplabv1_vgg16_largefov", {"msc": True}),  # DeepLab-MSc-LargeFOV
    ("deeplabv2_vgg16", {"input_scales": list(PAPER_SCALES)}),  # v2 §4: MSC
    ("deeplabv2_resnet101", {"input_scales": list(PAPER_SCALES)}),
    ("deeplabv3_resnet50", {"cascade_blocks": 3}),  # v3 Tables 1–3: up to block7
    ("deeplabv3_resnet101", {"cascade_blocks": 3}),
)


def format_options(options: dict[str, Any]) -> str:
    """``{"msc": True, "input_scales": [1.0, 0.5]}`` → ``"msc=true input_scales=[1.0,0.5]"`` (``--option`` syntax)."""
    return " ".join(f"{key}={json.dumps(value, separators=(',', ':'))}" for key, value in options.items())


def with_options(model: DeepLab, **options: Any) -> DeepLab:
    """The same weights rebuilt with other ``create_model`` options that change no weight
    (``output_stride``, ``image_pool_crop`` …); the ``metadata`` record and the
    train/eval mode are carried over."""
    if not model.config:
        raise ConfigError(
            f"rebuilding with {', '.join(options)} starts from the model's config, and this hand-built "
            "DeepLab has none; build it with those options instead"
        )
    rebuilt = create_model(**{**model.config, **options})
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.metadata = model.metadata
    return rebuilt.train(model.training)


def with_output_stride(model: DeepLab, output_stride: int) -> DeepLab:
    """The same weights rebuilt at another output stride (e.g. train OS16, evaluate OS8).

    Atrous rates that were derived from the output stride (ASPP, LargeFOV) follow it.
    The model's ``metadata`` (class names, palette …) is carried over as one record.
    """
    if not model.config:
        raise ConfigError(
            "with_output_stride rebuilds a model from its config, and this hand-built DeepLab has none; "
            "build its backbone at the other output stride instead"
        )
    return with_options(model, output_stride=output_stride)
