"""The ``unet`` family: ``monai.networks.nets.UNet`` segmenters (strided convolutions, optional residual units).

Every level halves every axis, so depth is limited by the smallest proxy axis; training pads inputs to
:meth:`UNetSpace.required_divisor` (the product of ``strides``) and crops predictions back.
"""

from __future__ import annotations

from typing import Any, ClassVar

from mednas.spaces._base import BaseSearchSpace, Problem, SpaceContext, TrialLike
from mednas.spaces._plan import check_choices, max_halvings, powers_of_two, stride_product
from mednas.spaces._registry import register_space
from mednas.spec import ArchSpec

__all__ = ["UNetSpace"]

_NORMS = ("instance", "batch")


@register_space("unet")
class UNetSpace(BaseSearchSpace):
    """Sample ``monai.networks.nets.UNet`` segmenters.

    ``depth`` is ``len(channels)``; ``strides`` are ``[2] * (depth - 1)`` and
    ``channels[l] = min(base * 2**l, max_filters)``.

    Args:
        **options: Bounds (``default_options`` lists them):
            ``min_depth``, ``max_depth``: number of levels (``len(channels)``).
            ``min_filters``, ``max_filters``: base channels are powers of two in
            ``[min_filters, max_filters // 4]``; no level is wider than ``max_filters``.
            ``max_res_units``: most residual units per block (``num_res_units`` is 0..max).
            ``kernels``: kernel sizes to choose from.
            ``norms``: ``"instance"`` and/or ``"batch"``.
            ``max_dropout``: largest dropout.
            ``min_feature_size``: smallest feature map per axis, in voxels.
    """

    network: ClassVar[str] = "monai.networks.nets.UNet"
    problems: ClassVar[tuple[Problem, ...]] = ("segmentation",)
    #: Three levels (two halvings) down to a 4-voxel map need 16 voxels (with the default options).
    min_input_size: ClassVar[int] = 16
    default_options: ClassVar[dict[str, Any]] = {
        "min_depth": 3,
        "max_depth": 5,
        "min_filters": 8,
        "max_filters": 64,
        "max_res_units": 2,
        "kernels": [3],
        "norms": ["instance", "batch"],
        "max_dropout": 0.2,
        "min_feature_size": 4,
    }

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        check_choices(self.name, "norms", self.options["norms"], _NORMS)
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
        """Return the product of ``strides`` per axis: input sizes must be multiples of it."""
        return stride_product(spec.kwargs["strides"], spec.spatial_dims)

    def sample(self, trial: TrialLike, ctx: SpaceContext) -> ArchSpec:
        """Draw one UNet (see the class docstring for the distribution)."""
        opt = self.options
        depth = trial.suggest_int(
            "unet.depth", int(opt["min_depth"]), max(int(opt["min_depth"]), self._depth_limit(ctx))
        )
        min_filters, max_filters = int(opt["min_filters"]), int(opt["max_filters"])
        base = trial.suggest_categorical(
            "unet.base_filters", powers_of_two(min_filters, max(min_filters, max_filters // 4))
        )
        channels = [min(base * 2**level, max(max_filters, base)) for level in range(depth)]
        res_units = trial.suggest_int("unet.num_res_units", 0, int(opt["max_res_units"]))
        kernel = trial.suggest_categorical("unet.kernel_size", list(opt["kernels"]))
        norm = trial.suggest_categorical("unet.norm", list(opt["norms"]))
        dropout = 0.0
        if float(opt["max_dropout"]) > 0:
            dropout = trial.suggest_float("unet.dropout", 0.0, float(opt["max_dropout"]))

        kwargs = {
            "spatial_dims": ctx.spatial_dims,
            "in_channels": ctx.in_channels,
            "out_channels": ctx.out_channels,
            "channels": channels,
            "strides": [2] * (depth - 1),
            "kernel_size": kernel,
            "up_kernel_size": 3,
            "num_res_units": res_units,
            "act": "prelu",
            "norm": norm,
            "dropout": dropout,
        }
        return ArchSpec(
            "monai.networks.nets.UNet", kwargs, self.name, ctx.spatial_dims, ctx.in_channels, ctx.out_channels
        )

    def _depth_limit(self, ctx: SpaceContext) -> int:
        most = max_halvings(min(ctx.input_shape), int(self.options["min_feature_size"]))
        return min(int(self.options["max_depth"]), 1 + most)
