"""The ``resnet`` family: ``monai.networks.nets.ResNet`` classifiers for 2D and 3D images.

It samples the block type, blocks per stage, stage widths and the stem; the stem's downsampling is limited so
that the last feature map keeps at least two voxels per axis at the proxy shape.
"""

from __future__ import annotations

from typing import Any, ClassVar

from mednas.spaces._base import BaseSearchSpace, Problem, SpaceContext, TrialLike
from mednas.spaces._plan import max_halvings, powers_of_two
from mednas.spaces._registry import register_space
from mednas.spec import ArchSpec

__all__ = ["ResNetSpace"]

# MONAI's ResNet always has four stages; stages 2-4 each halve the feature map.
_N_STAGES = 4
_STAGE_HALVINGS = 3


@register_space("resnet")
class ResNetSpace(BaseSearchSpace):
    """Sample ``monai.networks.nets.ResNet`` classifiers.

    Widths are ``block_inplanes = [w, w*g, w*g**2, w*g**3]`` with base width ``w`` and growth ``g``;
    ``widen_factor`` stays 1.0 because it would only rescale ``w``.

    Args:
        **options: Bounds (``default_options`` lists them):
            ``max_depth``: most blocks per stage (1..max_depth are sampled).
            ``min_width``, ``max_width``: base width of the first stage ``w`` is a power of two in
            ``[min_width, max_width // 8]``, and no stage is wider than ``max_width``.
            ``blocks``: block types to choose from, ``"basic"`` and/or ``"bottleneck"``.
            ``stem_kernels``: kernel sizes of the first convolution (``conv1_t_size``).

    Example:
        >>> from mednas.testing import RandomTrial
        >>> ctx = SpaceContext("classification", 2, 1, 2, (64, 64))
        >>> ResNetSpace().sample(RandomTrial(0), ctx).class_name
        'ResNet'
    """

    network: ClassVar[str] = "monai.networks.nets.ResNet"
    problems: ClassVar[tuple[Problem, ...]] = ("classification",)
    #: Three stride-2 stages leave a 2-voxel map at 16 voxels (stem without downsampling).
    min_input_size: ClassVar[int] = 16
    default_options: ClassVar[dict[str, Any]] = {
        "max_depth": 2,
        "min_width": 4,
        "max_width": 64,
        "blocks": ["basic", "bottleneck"],
        "stem_kernels": [3, 5, 7],
    }

    def sample(self, trial: TrialLike, ctx: SpaceContext) -> ArchSpec:
        """Draw one ResNet (see the class docstring for the distribution)."""
        opt = self.options
        block = trial.suggest_categorical("resnet.block", list(opt["blocks"]))
        layers = [
            trial.suggest_int(f"resnet.stage{i + 1}.blocks", 1, int(opt["max_depth"]))
            for i in range(_N_STAGES)
        ]
        growth = trial.suggest_categorical("resnet.width_growth", [1.5, 2.0])
        max_width = int(opt["max_width"])
        base = trial.suggest_categorical(
            "resnet.base_width",
            powers_of_two(int(opt["min_width"]), max(int(opt["min_width"]), max_width // 8)),
        )
        widths = [max(1, min(max_width, round(base * growth**i))) for i in range(_N_STAGES)]
        stem_kernel = trial.suggest_categorical("resnet.conv1_t_size", list(opt["stem_kernels"]))

        # How many halvings the stem may add: the stride-2 convolution and the max-pool each halve.
        stem_halvings = max(0, max_halvings(min(ctx.input_shape), 2) - _STAGE_HALVINGS)
        stride = trial.suggest_categorical("resnet.conv1_t_stride", [1, 2][: min(2, stem_halvings + 1)])
        used = 1 if stride == 2 else 0
        if stem_halvings - used >= 1:
            no_max_pool = trial.suggest_categorical("resnet.no_max_pool", [True, False])
        else:
            no_max_pool = True

        kwargs = {
            "block": block,
            "layers": layers,
            "block_inplanes": widths,
            "spatial_dims": ctx.spatial_dims,
            "n_input_channels": ctx.in_channels,
            "conv1_t_size": stem_kernel,
            "conv1_t_stride": stride,
            "no_max_pool": no_max_pool,
            "shortcut_type": "B",
            "widen_factor": 1.0,
            "num_classes": ctx.out_channels,
        }
        return ArchSpec(
            "monai.networks.nets.ResNet",
            kwargs,
            self.name,
            ctx.spatial_dims,
            ctx.in_channels,
            ctx.out_channels,
        )
