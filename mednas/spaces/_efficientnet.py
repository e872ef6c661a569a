"""The ``efficientnet`` family: ``monai.networks.nets.EfficientNet`` classifiers built from MBConv stages.

Each stage is one ``blocks_args_str`` entry (``"r1_k3_s22_e6_i16_o24_se0.25"``); ``image_size`` fixes the
static "same" padding, so :meth:`EfficientNetSpace.adapt_to_shape` resets it for the full-resolution shape.
"""

from __future__ import annotations

from typing import Any, ClassVar

from mednas.spaces._base import BaseSearchSpace, Problem, SpaceContext, TrialLike
from mednas.spaces._plan import max_halvings, powers_of_two
from mednas.spaces._registry import register_space
from mednas.spec import ArchSpec

__all__ = ["EfficientNetSpace"]

# MONAI's stem has round_filters(32) channels; the first stage's input must say the same before scaling.
_STEM_FILTERS = 32


@register_space("efficientnet")
class EfficientNetSpace(BaseSearchSpace):
    """Sample ``monai.networks.nets.EfficientNet`` classifiers stage by stage.

    Per stage ``i`` it samples kernel (3/5), expansion ratio, repeats, stride (1/2), squeeze-excitation ratio
    and output filters. Filters are *base* filters: MONAI multiplies them (and the 32-channel stem and
    1280-channel head) by ``width_coefficient`` and rounds to multiples of 8. Stride-2 stages are limited so
    that the last feature map keeps at least two voxels per axis at the proxy shape.

    Args:
        **options: Bounds (``default_options`` lists them):
            ``min_stages``, ``max_stages``: number of MBConv stages.
            ``max_repeats``: most blocks per stage.
            ``max_filters``: largest base filter count (powers of two from 8).
            ``expansions``: expansion ratios to choose from.
            ``kernels``: depthwise kernel sizes to choose from.
            ``width_coefficients``: MONAI's width multipliers to choose from.
            ``max_dropout``: largest dropout before the classifier.
    """

    network: ClassVar[str] = "monai.networks.nets.EfficientNet"
    problems: ClassVar[tuple[Problem, ...]] = ("classification",)
    #: The stride-2 stem and one stride-2 stage leave a 2-voxel map at 8 voxels.
    min_input_size: ClassVar[int] = 8
    default_options: ClassVar[dict[str, Any]] = {
        "min_stages": 3,
        "max_stages": 5,
        "max_repeats": 2,
        "max_filters": 64,
        "expansions": [1, 3, 6],
        "kernels": [3, 5],
        "width_coefficients": [0.25, 0.5],
        "max_dropout": 0.3,
    }

    def sample(self, trial: TrialLike, ctx: SpaceContext) -> ArchSpec:
        """Draw one EfficientNet (see the class docstring for the distribution)."""
        opt = self.options
        n_stages = trial.suggest_int("efficientnet.stages", int(opt["min_stages"]), int(opt["max_stages"]))
        # The stem halves once; the remaining halvings are shared out among the stages.
        halvings_left = max(0, max_halvings(min(ctx.input_shape), 2) - 1)
        filter_choices = powers_of_two(8, int(opt["max_filters"]))
        blocks: list[str] = []
        in_filters = _STEM_FILTERS
        for i in range(n_stages):
            p = f"efficientnet.stage{i + 1}"
            kernel = trial.suggest_categorical(f"{p}.kernel", list(opt["kernels"]))
            expand = trial.suggest_categorical(f"{p}.expansion", list(opt["expansions"]))
            repeats = trial.suggest_int(f"{p}.repeats", 1, int(opt["max_repeats"]))
            stride = 1
            if halvings_left > 0:
                stride = trial.suggest_categorical(f"{p}.stride", [1, 2])
                if stride == 2:
                    halvings_left -= 1
            se = trial.suggest_categorical(f"{p}.se_ratio", [0.0, 0.25])
            out_filters = trial.suggest_categorical(f"{p}.filters", filter_choices)
            block = f"r{repeats}_k{kernel}_s{stride}{stride}_e{expand}_i{in_filters}_o{out_filters}"
            blocks.append(block + (f"_se{se}" if se > 0 else ""))
            in_filters = out_filters
        width = trial.suggest_categorical("efficientnet.width_coefficient", list(opt["width_coefficients"]))
        dropout = trial.suggest_float("efficientnet.dropout", 0.0, float(opt["max_dropout"]))

        kwargs = {
            "blocks_args_str": blocks,
            "spatial_dims": ctx.spatial_dims,
            "in_channels": ctx.in_channels,
            "num_classes": ctx.out_channels,
            "width_coefficient": width,
            "depth_coefficient": 1.0,
            "dropout_rate": dropout,
            "image_size": _image_size(ctx.input_shape),
            "drop_connect_rate": 0.2,
            "depth_divisor": 8,
        }
        return ArchSpec(
            "monai.networks.nets.EfficientNet",
            kwargs,
            self.name,
            ctx.spatial_dims,
            ctx.in_channels,
            ctx.out_channels,
        )

    def adapt_to_shape(self, spec: ArchSpec, shape: tuple[int, ...]) -> ArchSpec:
        """Return ``spec`` with ``image_size`` set for inputs of spatial ``shape`` (weights are unaffected)."""
        return spec.replace_kwargs(image_size=_image_size(shape))


def _image_size(shape: tuple[int, ...]) -> int:
    # MONAI takes one size for all axes. Padding computed for the largest axis only changes the parity of
    # stride-2 outputs on the others, which the >= 2-voxel planning in `sample` leaves room for.
    return int(max(shape))
