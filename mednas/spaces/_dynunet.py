"""The ``dynunet`` family: nnU-Net-style ``monai.networks.nets.DynUNet`` segmenters, strides planned per axis.

Strides come from the proxy shape like nnU-Net's planner: an axis is halved at a level while its feature map
keeps ``min_feature_size`` voxels. Odd sizes are padded by training to :meth:`DynUNetSpace.required_divisor`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from mednas.spaces._base import BaseSearchSpace, Problem, SpaceContext, TrialLike
from mednas.spaces._plan import check_choices, max_halvings, powers_of_two, stride_product
from mednas.spaces._registry import register_space
from mednas.spec import ArchSpec

__all__ = ["DynUNetSpace"]

_NORMS: dict[str, Any] = {"instance": ["instance", {"affine": True}], "batch": "batch"}


@register_space("dynunet")
class DynUNetSpace(BaseSearchSpace):
    """Sample ``monai.networks.nets.DynUNet`` segmenters.

    ``depth`` is the number of levels (``len(strides)``, input block and bottleneck included). Level 0 has
    stride 1; at level ``l`` an axis has stride 2 while it has been halved fewer times than the proxy shape
    allows (anisotropic shapes get anisotropic strides). ``upsample_kernel_size`` is ``strides[1:]``, and
    ``filters[l] = min(base * 2**l, max_filters)``.

    Padding: DynUNet needs each input axis divisible by the product of its strides. The space does not
    restrict itself to shapes that divide (33 would then allow no downsampling); training pads inputs to
    :meth:`required_divisor` and crops predictions back.

    Args:
        **options: Bounds (``default_options`` lists them):
            ``min_depth``, ``max_depth``: number of levels (at least 3, MONAI's minimum).
            ``min_filters``, ``max_filters``: base filters are powers of two in
            ``[min_filters, max_filters // 4]``; no level is wider than ``max_filters``.
            ``min_feature_size``: smallest feature map per axis, in voxels.
            ``kernels``: kernel sizes to choose from, per level.
            ``norms``: ``"instance"`` and/or ``"batch"``.
            ``res_blocks``: choices for ``res_block``.
            ``deep_supervision``: choices for ``deep_supervision`` (``[False]`` turns it off).
            ``max_deep_supr_num``: most deep-supervision heads.
    """

    network: ClassVar[str] = "monai.networks.nets.DynUNet"
    problems: ClassVar[tuple[Problem, ...]] = ("segmentation",)
    #: Three levels (two halvings) down to a 4-voxel map need 16 voxels (with the default options).
    min_input_size: ClassVar[int] = 16
    default_options: ClassVar[dict[str, Any]] = {
        "min_depth": 3,
        "max_depth": 5,
        "min_filters": 8,
        "max_filters": 64,
        "min_feature_size": 4,
        "kernels": [3],
        "norms": ["instance", "batch"],
        "res_blocks": [False, True],
        "deep_supervision": [False, True],
        "max_deep_supr_num": 2,
    }

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        check_choices(self.name, "norms", self.options["norms"], list(_NORMS))
        if int(self.options["min_depth"]) < 3:
            raise ValueError(
                f"option 'min_depth' of search space {self.name!r} must be at least 3 (MONAI's minimum)"
            )

    def supports(self, ctx: SpaceContext) -> str | None:
        """Return ``None`` if some axis of the proxy shape allows ``min_depth`` levels, else the reason."""
        if ctx.problem not in self.problems:
            return f"search space {self.name!r} does not do {ctx.problem}"
        if self._depth_limit(ctx) < int(self.options["min_depth"]):
            need = int(self.options["min_feature_size"]) * 2 ** (int(self.options["min_depth"]) - 1)
            return (
                f"search space {self.name!r} needs at least {need} voxels along some axis for "
                f"{self.options['min_depth']} levels, proxy shape is {list(ctx.input_shape)}"
            )
        return None

    @classmethod
    def required_divisor(cls, spec: ArchSpec) -> tuple[int, ...]:
        """Return the per-axis product of ``strides``: input sizes must be multiples of it."""
        return stride_product(spec.kwargs["strides"], spec.spatial_dims)

    def sample(self, trial: TrialLike, ctx: SpaceContext) -> ArchSpec:
        """Draw one DynUNet (see the class docstring for the distribution)."""
        opt = self.options
        depth = trial.suggest_int(
            "dynunet.depth", int(opt["min_depth"]), max(int(opt["min_depth"]), self._depth_limit(ctx))
        )
        halvings = [min(max_halvings(s, int(opt["min_feature_size"])), depth - 1) for s in ctx.input_shape]
        strides = [[1] * ctx.spatial_dims] + [
            [2 if level <= h else 1 for h in halvings] for level in range(1, depth)
        ]
        kernels = [
            [trial.suggest_categorical(f"dynunet.level{level}.kernel", list(opt["kernels"]))]
            * ctx.spatial_dims
            for level in range(depth)
        ]
        max_filters = int(opt["max_filters"])
        min_filters = int(opt["min_filters"])
        base = trial.suggest_categorical(
            "dynunet.base_filters", powers_of_two(min_filters, max(min_filters, max_filters // 4))
        )
        filters = [min(base * 2**level, max(max_filters, base)) for level in range(depth)]
        norm = trial.suggest_categorical("dynunet.norm", list(opt["norms"]))
        res_block = trial.suggest_categorical("dynunet.res_block", list(opt["res_blocks"]))
        deep_supervision = trial.suggest_categorical(
            "dynunet.deep_supervision", list(opt["deep_supervision"])
        )
        deep_supr_num = 1
        if deep_supervision:
            deep_supr_num = trial.suggest_int(
                "dynunet.deep_supr_num", 1, max(1, min(int(opt["max_deep_supr_num"]), depth - 2))
            )

        kwargs = {
            "spatial_dims": ctx.spatial_dims,
            "in_channels": ctx.in_channels,
            "out_channels": ctx.out_channels,
            "kernel_size": kernels,
            "strides": strides,
            "upsample_kernel_size": strides[1:],
            "filters": filters,
            "dropout": None,
            "norm_name": _NORMS[norm],
            "act_name": ["leakyrelu", {"inplace": True, "negative_slope": 0.01}],
            "deep_supervision": deep_supervision,
            "deep_supr_num": deep_supr_num,
            "res_block": res_block,
            "trans_bias": False,
        }
        return ArchSpec(
            "monai.networks.nets.DynUNet",
            kwargs,
            self.name,
            ctx.spatial_dims,
            ctx.in_channels,
            ctx.out_channels,
        )

    def _depth_limit(self, ctx: SpaceContext) -> int:
        most = max(max_halvings(s, int(self.options["min_feature_size"])) for s in ctx.input_shape)
        return min(int(self.options["max_depth"]), 1 + most)
