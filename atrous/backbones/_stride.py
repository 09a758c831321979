"""One way to turn strides into atrous rates, used by every backbone.

A backbone is described by the nominal strides of its stages (e.g. ResNet: stem 4,
then 1, 2, 2, 2). To reach an output stride (OS) smaller than the nominal product,
every stride that would take the running stride past OS becomes 1 and multiplies the
rate of all later convolutions by the stride it replaced (DeepLab v3 §3.1, TF
``resnet_utils.stack_blocks_dense``). The layer that lost its stride keeps the rate
the previous layers had (``first_dilation``), the following ones use the new rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from atrous.errors import ConfigError
from atrous.strides import check_output_stride


@dataclass(frozen=True)
class StageGeometry:
    """How one stage is built for a given output stride.

    ``stride``: stride of the stage's first (downsampling) layer, 1 once OS is reached.
    ``dilation``: rate of the stage's later layers. ``first_dilation``: rate of the
    first layer (the rate before this stage's stride was turned into dilation).
    ``output_stride``: running stride after this stage.
    """

    stride: int
    dilation: int
    first_dilation: int
    output_stride: int


def plan_stages(strides: Sequence[int], output_stride: int) -> list[StageGeometry]:
    """Plan stride and dilation of each stage so the network ends at ``output_stride``.

    >>> [(g.stride, g.dilation) for g in plan_stages([4, 1, 2, 2, 2], 8)]
    [(4, 1), (1, 1), (2, 1), (1, 2), (1, 4)]
    """
    check_output_stride(output_stride)
    running, dilation = 1, 1
    plan = []
    for stride in strides:
        first_dilation = dilation
        if running * stride > output_stride:
            dilation *= stride
            stride = 1
        running *= stride
        plan.append(StageGeometry(stride, dilation, first_dilation, running))
    return plan


def multi_grid_rates(stage_dilation: int, multi_grid: Sequence[int] | None, num_units: int) -> list[int]:
    """Rates of the units of the last stage under DeepLab v3's multi-grid.

    Unit ``i`` gets ``stage_dilation · multi_grid[i]``: at OS16 (stage rate 2),
    ``multi_grid=(1, 2, 4)`` gives rates (2, 4, 8). ``None`` means unit rates of 1.
    """
    if multi_grid is None:
        return [stage_dilation] * num_units
    if len(multi_grid) != num_units or any(int(g) < 1 for g in multi_grid):
        raise ConfigError(
            f"multi_grid must give {num_units} positive unit rates (one per unit of the last stage); got {tuple(multi_grid)}"
        )
    return [stage_dilation * int(g) for g in multi_grid]
