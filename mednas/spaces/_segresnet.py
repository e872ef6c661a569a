"""The ``segresnet`` family: ``monai.networks.nets.SegResNet`` segmenters (residual encoder, light decoder).

Each level halves every axis, so depth is limited by the smallest proxy axis; training pads inputs to
:meth:`SegResNetSpace.required_divisor` (``2 ** (levels - 1)`` per axis) and crops predictions back.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from mednas.spaces._base import BaseSearchSpace, Problem, SpaceContext, TrialLike
from mednas.spaces._plan import check_choices, max_halvings, powers_of_two
from mednas.spaces._registry import register_space
from mednas.spec import ArchSpec

__all__ = ["SegResNetSpace"]

_UPSAMPLE_MODES = ("nontrainable", "deconv", "pixelshuffle")
_NORMS = ("group", "instance", "batch")


@register_space("segresnet")
class SegResNetSpace(BaseSearchSpace):
    """Sample ``monai.networks.nets.SegResNet`` segmenters.

    ``blocks_down`` has one entry per level (residual blocks at that level); ``blocks_up`` one fewer. Level
    ``l`` has ``init_filters * 2**l`` channels. Group norm uses ``gcd(8, init_filters)`` groups so that tiny
    widths stay valid.

    Args:
        **options: Bounds (``default_options`` lists them):
            ``min_depth``, ``max_depth``: number of levels (``len(blocks_down)``).
            ``min_filters``, ``max_filters``: ``init_filters`` is a power of two from ``min_filters``; the
            deepest level of the deepest network the proxy shape allows is at most ``max_filters`` wide.
            ``max_blocks_down``, ``max_blocks_up``: most residual blocks per encoder / decoder level.
            ``min_feature_size``: smallest feature map per axis, in voxels.
            ``norms``: any of ``"group"``, ``"instance"``, ``"batch"``.
            ``upsample_modes``: any of ``"nontrainable"``, ``"deconv"``, ``"pixelshuffle"``.
    """

    network: ClassVar[str] = "monai.networks.nets.SegResNet"
    problems: ClassVar[tuple[Problem, ...]] = ("segmentation",)
    #: Three levels (two halvings) down to a 4-voxel map need 16 voxels (with the default options).
    min_input_size: ClassVar[int] = 16
    default_options: ClassVar[dict[str, Any]] = {
        "min_depth": 3,
        "max_depth": 4,
        "min_filters": 8,
        "max_filters": 64,
        "max_blocks_down": 2,
        "max_blocks_up": 1,
        "min_feature_size": 4,
        "norms": ["group", "instance", "batch"],
        "upsample_modes": ["nontrainable", "deconv"],
    }

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        check_choices(self.name, "norms", self.options["norms"], _NORMS)
        check_choices(self.name, "upsample_modes", self.options["upsample_modes"], _UPSAMPLE_MODES)
        if int(self.options["min_depth"]) < 2:
            raise ValueError(f"option 'min_depth' of search space {self.name!r} must be at least 2")

    def supports(self, ctx: SpaceContext) -> str | None:
        """Return ``None`` if the smallest proxy axis allows ``min_depth`` levels, else the reason."""
        if ctx.problem not in self.problems:
            return f"search space {self.name!r} does not do {ctx.problem}"
        if self._depth_limit(ctx) < int(self.options["min_depth"]):
            need = int(self.options["min_feature_size"]) * 2 ** (int(self.options["min_depth"]) - 1)
            return (
                f"search space {self.name!r} needs at least {need} voxels per axis for "
                f"{self.options['min_depth']} levels, proxy shape is {list(ctx.input_shape)}"
            )
        return None

    @classmethod
    def required_divisor(cls, spec: ArchSpec) -> tuple[int, ...]:
        """Return ``2 ** (levels - 1)`` per axis: input sizes must be multiples of it."""
        return (2 ** (len(spec.kwargs["blocks_down"]) - 1),) * spec.spatial_dims

    def sample(self, trial: TrialLike, ctx: SpaceContext) -> ArchSpec:
        """Draw one SegResNet (see the class docstring for the distribution)."""
        opt = self.options
        limit = max(int(opt["min_depth"]), self._depth_limit(ctx))
        depth = trial.suggest_int("segresnet.depth", int(opt["min_depth"]), limit)
        min_filters = int(opt["min_filters"])
        init_filters = trial.suggest_categorical(
            "segresnet.init_filters",
            powers_of_two(min_filters, max(min_filters, int(opt["max_filters"]) // 2 ** (limit - 1))),
        )
        blocks_down = [
            trial.suggest_int(f"segresnet.down{level}.blocks", 1, int(opt["max_blocks_down"]))
            for level in range(depth)
        ]
        blocks_up = [
            trial.suggest_int(f"segresnet.up{level}.blocks", 1, int(opt["max_blocks_up"]))
            for level in range(depth - 1)
        ]
        norm_name = trial.suggest_categorical("segresnet.norm", list(opt["norms"]))
        norm: Any = (
            ["group", {"num_groups": math.gcd(8, init_filters)}] if norm_name == "group" else norm_name
        )
        upsample_mode = trial.suggest_categorical("segresnet.upsample_mode", list(opt["upsample_modes"]))

        kwargs = {
            "spatial_dims": ctx.spatial_dims,
            "init_filters": init_filters,
            "in_channels": ctx.in_channels,
            "out_channels": ctx.out_channels,
            "dropout_prob": None,
            "act": ["relu", {"inplace": True}],
            "norm": norm,
            "use_conv_final": True,
            "blocks_down": blocks_down,
            "blocks_up": blocks_up,
            "upsample_mode": upsample_mode,
        }
        return ArchSpec(
            "monai.networks.nets.SegResNet",
            kwargs,
            self.name,
            ctx.spatial_dims,
            ctx.in_channels,
            ctx.out_channels,
        )

    def _depth_limit(self, ctx: SpaceContext) -> int:
        most = max_halvings(min(ctx.input_shape), int(self.options["min_feature_size"]))
        return min(int(self.options["max_depth"]), 1 + most)
