"""The ``densenet`` family: ``monai.networks.nets.DenseNet`` classifiers with four dense blocks.

DenseNet divides the input by 32 with unpadded pooling, so it fails on inputs under 29 voxels per axis (the
measured "fails below 32 px"); :attr:`DenseNetSpace.min_input_size` says so, and ``supports`` refuses them.
"""

from __future__ import annotations

from typing import Any, ClassVar

from mednas.spaces._base import BaseSearchSpace, Problem, SpaceContext, TrialLike
from mednas.spaces._plan import powers_of_two
from mednas.spaces._registry import register_space
from mednas.spec import ArchSpec

__all__ = ["DenseNetSpace"]

_N_BLOCKS = 4


@register_space("densenet")
class DenseNetSpace(BaseSearchSpace):
    """Sample ``monai.networks.nets.DenseNet`` classifiers (the DenseNet-121 layout, made small).

    Args:
        **options: Bounds (``default_options`` lists them):
            ``min_features``, ``max_features``: ``init_features`` is a power of two in this range.
            ``growth_rates``: growth rates to choose from.
            ``max_layers``: most dense layers per block (``block_config`` entries are 1..max_layers).
            ``bn_sizes``: bottleneck multipliers to choose from.
            ``max_dropout``: largest dropout after each dense layer.
    """

    network: ClassVar[str] = "monai.networks.nets.DenseNet"
    problems: ClassVar[tuple[Problem, ...]] = ("classification",)
    #: Stem (/4) and three unpadded 2x2 average pools need ceil(n / 4) >= 8, i.e. n >= 29.
    min_input_size: ClassVar[int] = 29
    default_options: ClassVar[dict[str, Any]] = {
        "min_features": 8,
        "max_features": 32,
        "growth_rates": [8, 12, 16],
        "max_layers": 6,
        "bn_sizes": [2, 4],
        "max_dropout": 0.0,
    }

    def sample(self, trial: TrialLike, ctx: SpaceContext) -> ArchSpec:
        """Draw one DenseNet (see the class docstring for the distribution)."""
        opt = self.options
        features = trial.suggest_categorical(
            "densenet.init_features", powers_of_two(int(opt["min_features"]), int(opt["max_features"]))
        )
        growth = trial.suggest_categorical("densenet.growth_rate", list(opt["growth_rates"]))
        block_config = [
            trial.suggest_int(f"densenet.block{i + 1}.layers", 1, int(opt["max_layers"]))
            for i in range(_N_BLOCKS)
        ]
        bn_size = trial.suggest_categorical("densenet.bn_size", list(opt["bn_sizes"]))
        dropout = 0.0
        if float(opt["max_dropout"]) > 0:
            dropout = trial.suggest_float("densenet.dropout", 0.0, float(opt["max_dropout"]))

        kwargs = {
            "spatial_dims": ctx.spatial_dims,
            "in_channels": ctx.in_channels,
            "out_channels": ctx.out_channels,
            "init_features": features,
            "growth_rate": growth,
            "block_config": block_config,
            "bn_size": bn_size,
            "dropout_prob": dropout,
        }
        return ArchSpec(
            "monai.networks.nets.DenseNet",
            kwargs,
            self.name,
            ctx.spatial_dims,
            ctx.in_channels,
            ctx.out_channels,
        )
