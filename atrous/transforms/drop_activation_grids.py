"""``drop_activation_grids``: an imported quantisation-aware graph's uint8 activation grids removed.

A model built with ``activation_quant`` (:mod:`atrous.nn.fake_quant`) rounds the outputs
of the modules it names to the grids the graph was trained with, which reproduces that
graph. Without them it computes in plain float: the other transforms (BN folding,
channels_last, bf16) then apply, and results move by what the grids did.
"""

from __future__ import annotations

from torch import Tensor, nn

from atrous.nn.fake_quant import FakeQuantHook
from atrous.transforms.registry import register_transform

__all__ = ["drop_activation_grids"]


@register_transform("drop_activation_grids", trainable=True)
def drop_activation_grids(model: nn.Module, *, example: Tensor | None = None) -> nn.Module:
    """Every activation grid (``FakeQuantHook``) removed: the model computes in plain float.

    Equivalence: a model without grids is unchanged; on one with grids, not exact by
    design: every grid moves its output by up to half its step, and by the clamp to its range.
    """
    for module in model.modules():
        for key in [key for key, hook in module._forward_hooks.items() if isinstance(hook, FakeQuantHook)]:
            del module._forward_hooks[key]
    return model
