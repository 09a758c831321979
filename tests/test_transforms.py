"""Model transforms (atrous/transforms): each one's equivalence with the untransformed
model (exact, or within the stated rounding and with labels agreeing), the registry,
and the names the Predictor and the trainer report."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch
from _inference_models import single_thread, small_model
from torch import nn

from atrous import Predictor
from atrous.errors import ConfigError
from atrous.inference.fast import default_transforms
from atrous.labels import class_labels
from atrous.nn.atrous_conv import AtrousConv2d
from atrous.nn.fake_quant import has_activation_quant
from atrous.transforms.bf16_row_taps import RowTapConv2d
from atrous.transforms.fuse_pointwise import FusedConv2d, FusedInvertedResidual, fusable
from atrous.transforms.registry import apply_transforms, get_transform, list_transforms

# Every registered transform has its equivalence test below; a new one fails here until it has one.
EQUIVALENCE_TESTED = {
    "bf16", "bf16_row_taps", "channels_last", "drop_activation_grids", "fold_bn", "fuse_pointwise", "skip_dead_taps",
}  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    yield from single_thread()


def _outputs(model: nn.Module, x: torch.Tensor, **transforms: object) -> tuple[torch.Tensor, torch.Tensor]:
    """(untransformed logits, transformed logits) of ``model`` on ``x``, the latter with the
    transforms named in ``transforms["names"]`` applied to a copy."""
    names = transforms["names"]
    model.eval()
    transformed, applied = apply_transforms(copy.deepcopy(model), names, example=x[:1])  # type: ignore[arg-type]
    assert applied == tuple(names)  # type: ignore[arg-type]
    with torch.no_grad():
        return model(x), transformed.eval()(x.to(next(transformed.parameters()).dtype)).float()


def _agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return (class_labels(a) == class_labels(b)).float().mean().item()


def test_every_transform_is_registered_and_tested() -> None:
    assert set(list_transforms()) == EQUIVALENCE_TESTED
    assert all(get_transform(name).summary for name in list_transforms())


def test_fold_bn_equals_the_model_within_float_rounding() -> None:
    model = small_model("deeplabv3plus_mobilenet_v2", num_classes=3)
    x = torch.randn(2, 3, 64, 64)
    reference, folded = _outputs(model, x, names=["fold_bn"])
    torch.testing.assert_close(folded, reference, rtol=1e-4, atol=1e-4 * reference.abs().max().item())
    assert _agreement(folded, reference) == 1.0
    assert not any(
        isinstance(m, nn.BatchNorm2d) for m in apply_transforms(copy.deepcopy(model), ["fold_bn"])[0].modules()
    )


def test_channels_last_equals_the_model_within_summation_order() -> None:
    model = small_model("deeplabv3_mobilenet_v2", num_classes=3)
    x = torch.randn(1, 3, 64, 64)
    reference, transformed = _outputs(model, x.contiguous(memory_format=torch.channels_last), names=["channels_last"])
    torch.testing.assert_close(transformed, reference, rtol=1e-5, atol=1e-5 * reference.abs().max().item())
    converted = apply_transforms(copy.deepcopy(model), ["channels_last"])[0]
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in converted.parameters() if p.dim() == 4)


def test_bf16_stays_within_bf16_rounding_and_keeps_the_labels() -> None:
    model = small_model("deeplabv3_mobilenet_v2", num_classes=3)
    x = torch.randn(1, 3, 96, 96)
    reference, transformed = _outputs(model, x, names=["fold_bn", "bf16"])
    assert (transformed - reference).abs().max() <= 0.05 * reference.abs().max()
    assert _agreement(transformed, reference) >= 0.97


def test_skip_dead_taps_is_exact_forward_and_backward_and_keeps_parameters() -> None:
    model = small_model("deeplabv3_mobilenet_v2", num_classes=3, output_stride=8)
    dilated = [name for name, m in model.named_modules() if type(m) is nn.Conv2d and max(m.dilation) > 1]
    assert dilated  # the backbone's dilated convs: the heads build AtrousConv2d themselves
    keys = list(model.state_dict())
    transformed, _ = apply_transforms(copy.deepcopy(model), ["skip_dead_taps"], training=True)
    assert all(type(transformed.get_submodule(name)) is AtrousConv2d for name in dilated)
    assert list(transformed.state_dict()) == keys
    x = torch.randn(2, 3, 40, 40)  # 5×5 features at OS 8: rates ≥ 8 read only padding
    out, got = model.eval()(x), transformed.eval()(x)  # (eval: no dropout draws to differ)
    torch.testing.assert_close(got, out, rtol=1e-5, atol=1e-5 * out.abs().max().item())
    grads = torch.autograd.grad(out.square().sum(), list(model.parameters()))
    new_grads = torch.autograd.grad(got.square().sum(), list(transformed.parameters()))
    for want, have in zip(grads, new_grads, strict=True):
        torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-4 * (want.abs().max().item() + 1e-12))


def test_bf16_row_taps_replaces_the_aspp_branches_sharing_their_parameters() -> None:
    torch.manual_seed(1)
    model = small_model("deeplabv3_resnet50", num_classes=4)
    parameters = {name: p for name, p in model.named_parameters()}
    transformed, _ = apply_transforms(model, ["bf16_row_taps"], training=True)  # in place
    replaced = [name for name, m in transformed.named_modules() if isinstance(m, RowTapConv2d)]
    assert len(replaced) == 3 and all(name.startswith("head.") for name in replaced)  # rates 6, 12, 18 on 2048 ch
    assert all(p is parameters[name] for name, p in transformed.named_parameters())  # trainable: the same tensors
    x = torch.randn(1, 3, 97, 97)
    plain = small_model("deeplabv3_resnet50", num_classes=4)
    with torch.no_grad():
        torch.testing.assert_close(transformed(x), plain(x))  # float32: still the convolution
        reference = plain(x)
        bf16_plain = copy.deepcopy(plain).bfloat16()(x.bfloat16()).float()
        bf16_rows = copy.deepcopy(transformed).bfloat16()(x.bfloat16()).float()
    assert (bf16_rows - reference).abs().max() <= 0.05 * reference.abs().max()
    assert _agreement(bf16_rows, reference) >= 0.97 and _agreement(bf16_plain, reference) >= 0.97


GRIDS = {"backbone.features.3": [[0.05, 128]], "head.0.project": [[0.02, 100], [0.03, 120]]}


def test_drop_activation_grids_gives_the_model_without_them() -> None:
    torch.manual_seed(0)
    with_grids = small_model("deeplabv3_mobilenet_v2", num_classes=3, activation_quant=GRIDS)
    without = small_model("deeplabv3_mobilenet_v2", num_classes=3)
    without.load_state_dict(with_grids.state_dict())
    x = torch.randn(1, 3, 64, 64)
    assert has_activation_quant(with_grids) and not has_activation_quant(without)
    with torch.no_grad():
        rounded = with_grids(x)
        assert not torch.equal(rounded, without(x))  # the grids take part in the computation
        dropped, _ = apply_transforms(copy.deepcopy(with_grids), ["drop_activation_grids"])
        assert not has_activation_quant(dropped)
        torch.testing.assert_close(dropped(x), without(x), rtol=0, atol=0)
        unchanged, _ = apply_transforms(copy.deepcopy(without), ["drop_activation_grids"])
        torch.testing.assert_close(unchanged(x), without(x), rtol=0, atol=0)


@pytest.mark.skipif(not fusable(), reason="this PyTorch build has no oneDNN fused convolution")
@pytest.mark.parametrize(
    "name",
    [
        "lraspp_mobilenet_v3_large",  # h-swish, ReLU, SE (h-sigmoid), residuals in the v3 layout
        "deeplabv3plus_mobilenet_v2",  # ReLU6, residuals in the flat v2 layout, separable decoder
        "deeplabv3plus_mobilenet_edgetpu",  # fused (k×k expansion) blocks
        "deeplabv3_resnet50",  # bottlenecks: convs fused, the block's own sum left alone
        "deeplabv3plus_xception65",
    ],
)
def test_fuse_pointwise_equals_the_folded_model_and_fuses_activations_and_residuals(name: str) -> None:
    model = small_model(name, num_classes=5)
    x = torch.randn(2, 3, 67, 91).contiguous(memory_format=torch.channels_last)
    folded, _ = apply_transforms(copy.deepcopy(model).eval(), ["fold_bn", "channels_last"], example=x[:1])
    fused, applied = apply_transforms(copy.deepcopy(folded), ["fuse_pointwise"])
    assert applied == ("fuse_pointwise",)
    with torch.no_grad():
        reference, got = folded(x), fused(x)
    torch.testing.assert_close(got, reference, rtol=1e-4, atol=1e-4 * reference.abs().max().item())
    assert _agreement(got, reference) == 1.0
    convs = [m for m in fused.modules() if isinstance(m, FusedConv2d)]
    assert convs and not any(type(m) is nn.Conv2d for m in fused.modules())
    if "mobilenet" in name:
        assert {c.post_op for c in convs} >= {"none", "relu" if "v3" in name or "edgetpu" in name else "hardtanh"}
        assert any(isinstance(m, FusedInvertedResidual) for m in fused.modules())
    if "v3_large" in name:
        assert "hardswish" in {c.post_op for c in convs}
    copy.deepcopy(fused)  # plain tensors: a fused model copies like any other


@pytest.mark.skipif(not fusable(), reason="this PyTorch build has no oneDNN fused convolution")
def test_fuse_pointwise_leaves_unfolded_and_other_dtype_layers() -> None:
    model = small_model("deeplabv3_mobilenet_v2", num_classes=3).eval()
    fused, _ = apply_transforms(copy.deepcopy(model), ["fuse_pointwise"])  # BNs not folded
    assert any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert not any(isinstance(m, FusedInvertedResidual) for m in fused.modules())  # projection is conv → BN
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-4)
    half, _ = apply_transforms(copy.deepcopy(model).to(torch.bfloat16), ["fuse_pointwise"])
    assert not any(isinstance(m, FusedConv2d) for m in half.modules())


def test_predictor_labels_from_the_head_equal_the_full_models_labels() -> None:
    model = small_model("deeplabv3plus_mobilenet_v2", num_classes=4).eval()
    images = torch.randint(0, 256, (2, 3, 96, 130), dtype=torch.uint8)
    predictor = Predictor(model, batch_size=2)
    with torch.no_grad():
        plain = class_labels(model(predictor.normalize(images)))
    assert torch.equal(predictor.predict(images), plain)
    full_calls = []  # the whole model (with its full-resolution upsampling) is not called
    hook = predictor.model.register_forward_hook(lambda *_: full_calls.append(1))
    predictor.predict(images)
    hook.remove()
    assert full_calls == []
    windows = Predictor(model, crop_size=64)  # sliding windows run the whole model
    windows.model.register_forward_hook(lambda *_: full_calls.append(1))
    windows.predict(images[:1])
    assert full_calls


def test_apply_checks_every_name_first_and_refuses_inference_only_ones_in_training() -> None:
    model = small_model()
    with pytest.raises(ConfigError, match="unknown transform 'fold'; valid: .*fold_bn"):
        apply_transforms(model, ["channels_last", "fold"])
    assert all(p.is_contiguous() for p in model.parameters())  # nothing applied
    with pytest.raises(ConfigError, match="fold_bn, bf16 are for inference only"):
        apply_transforms(model, ["skip_dead_taps", "fold_bn", "bf16"], training=True)


def test_predictor_reports_the_transforms_it_applied() -> None:
    model = small_model("deeplabv3_mobilenet_v2", num_classes=3)
    cpu = torch.device("cpu")
    fused = ("fuse_pointwise",) if fusable() else ()
    assert Predictor(model).transforms == ("skip_dead_taps", "fold_bn", "channels_last", *fused)
    assert Predictor(model, fast=False).transforms == ()
    bf16 = Predictor(model, precision="bf16").transforms
    assert bf16 == default_transforms(model, device=cpu, dtype=torch.bfloat16, fast=True) and bf16[-1] == "bf16"
    assert Predictor(model, transforms=["fold_bn"]).transforms == ("fold_bn",)
    with pytest.raises(ConfigError, match="name both or neither"):
        Predictor(model, precision="bf16", transforms=["fold_bn"])
    grids = small_model("deeplabv3_mobilenet_v2", num_classes=3, activation_quant=GRIDS)
    assert Predictor(grids).transforms == ("skip_dead_taps",)  # BN and NCHW kept: the grids' rounding
    with pytest.raises(ConfigError, match="drop_activation_grids"):
        Predictor(grids, precision="bf16")
    dropped = Predictor(grids, precision="bf16", transforms=["drop_activation_grids", "fold_bn", "bf16"])
    assert dropped.transforms == ("drop_activation_grids", "fold_bn", "bf16")
    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    assert dropped.predict(image).shape == (64, 64)


def test_trainer_transforms_follow_the_options() -> None:
    from atrous.engine.config import make_config
    from atrous.engine.trainer import training_transforms

    cpu = torch.device("cpu")
    assert training_transforms(make_config({"channels_last": True}), cpu)[:2] == ("skip_dead_taps", "channels_last")
    assert training_transforms(make_config({"channels_last": False}), cpu) == ("skip_dead_taps",)
    assert training_transforms(make_config({"channels_last": False}), torch.device("cuda")) == ("skip_dead_taps",)
    for name in training_transforms(make_config({"amp": "bf16"}), cpu):
        assert get_transform(name).trainable
