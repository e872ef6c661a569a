"""The conformance suite accepts a well-behaved third-party space and names what is wrong with broken ones."""

from __future__ import annotations

import random
from typing import Any, ClassVar

import pytest

from mednas.spaces import BaseSearchSpace, SpaceContext, create_space, register_space
from mednas.spaces._base import Problem, TrialLike
from mednas.spec import ArchSpec
from mednas.testing import check_space


class TinyBasicUNetSpace(BaseSearchSpace):
    """A third-party family: MONAI's BasicUNet, which pads odd sizes itself.

    Four 2x poolings leave one voxel at 16, where instance norm fails in training: it needs 32.
    """

    problems: ClassVar[tuple[Problem, ...]] = ("segmentation",)
    min_input_size: ClassVar[int] = 32
    default_options: ClassVar[dict[str, Any]] = {"max_features": 8}

    def sample(self, trial: TrialLike, ctx: SpaceContext) -> ArchSpec:
        f = trial.suggest_categorical(
            f"{self.name}.features", [2, 4, 8][: 1 + int(self.options["max_features"]) // 4]
        )
        kwargs = {
            "spatial_dims": ctx.spatial_dims,
            "in_channels": ctx.in_channels,
            "out_channels": ctx.out_channels,
            "features": [f, f, 2 * f, 2 * f, 4 * f, f],
            "upsample": trial.suggest_categorical(f"{self.name}.upsample", ["deconv", "nontrainable"]),
        }
        return ArchSpec(
            "monai.networks.nets.BasicUNet",
            kwargs,
            self.name,
            ctx.spatial_dims,
            ctx.in_channels,
            ctx.out_channels,
        )


def _register(cls: type[BaseSearchSpace], name: str, scratch: list[str]) -> type[BaseSearchSpace]:
    scratch.append(name)
    return register_space(name)(type(cls.__name__, (cls,), {}))


def test_a_third_party_space_passes_and_is_created_by_name(scratch_registry: list[str]) -> None:
    _register(TinyBasicUNetSpace, "tinybasicunet", scratch_registry)
    specs = check_space("tinybasicunet", options={"max_features": 4}, seeds=(0, 1))
    assert {spec.family for spec in specs} == {"tinybasicunet"} and len(specs) == 4
    assert create_space("tinybasicunet").options == {"max_features": 8}


class _Unprefixed(TinyBasicUNetSpace):
    def sample(self, trial: TrialLike, ctx: SpaceContext) -> ArchSpec:
        trial.suggest_int("depth", 1, 2)
        return super().sample(trial, ctx)


class _HiddenRandomness(TinyBasicUNetSpace):
    def sample(self, trial: TrialLike, ctx: SpaceContext) -> ArchSpec:
        spec = super().sample(trial, ctx)
        return spec.replace_kwargs(dropout=random.random() * 0.1)


class _DriftingChoices(TinyBasicUNetSpace):
    def sample(self, trial: TrialLike, ctx: SpaceContext) -> ArchSpec:
        spec = super().sample(trial, ctx)
        first = spec.kwargs["features"][0]
        trial.suggest_categorical(f"{self.name}.act", ["relu", "prelu"][: 1 + (first > 4)])
        return spec


class _ListChoices(TinyBasicUNetSpace):
    def sample(self, trial: TrialLike, ctx: SpaceContext) -> ArchSpec:
        trial.suggest_categorical(f"{self.name}.strides", [(2, 2), (1, 2)])  # type: ignore[list-item]
        return super().sample(trial, ctx)


class _WrongChannels(TinyBasicUNetSpace):
    def sample(self, trial: TrialLike, ctx: SpaceContext) -> ArchSpec:
        return super().sample(trial, ctx).replace_kwargs(out_channels=ctx.out_channels + 1)


class _ClaimsTooSmall(TinyBasicUNetSpace):
    min_input_size: ClassVar[int] = 16


class _NeedsPaddingButSaysNot(TinyBasicUNetSpace):
    def sample(self, trial: TrialLike, ctx: SpaceContext) -> ArchSpec:
        f = trial.suggest_categorical(f"{self.name}.features", [2, 4])
        kwargs = {
            "spatial_dims": ctx.spatial_dims,
            "in_channels": ctx.in_channels,
            "out_channels": ctx.out_channels,
            "channels": [f, 2 * f, 4 * f],
            "strides": [2, 2],
        }
        return ArchSpec(
            "monai.networks.nets.UNet", kwargs, self.name, ctx.spatial_dims, ctx.in_channels, ctx.out_channels
        )


@pytest.mark.filterwarnings("ignore:Choices for a categorical distribution:UserWarning")
@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (_Unprefixed, r"parameter names must start with 'broken\.': \['depth'\]"),
        (_HiddenRandomness, "randomness outside the trial"),
        (_DriftingChoices, r"broken\.act: choices .* differ"),
        (_ListChoices, "Optuna choices must be None/bool/int/float/str"),
        (_WrongChannels, r"train-mode output \(2, 4, 33, 34\), expected \(2, 3, 33, 34\)"),
        (_ClaimsTooSmall, "sampled at min_input_size 16 does not run"),
        (
            _NeedsPaddingButSaysNot,
            r"broken segmentation 2D seed 0: RuntimeError: Sizes of tensors must match",
        ),
    ],
)
def test_a_broken_space_fails_with_the_reason(
    cls: type[BaseSearchSpace], message: str, scratch_registry: list[str]
) -> None:
    _register(cls, "broken", scratch_registry)
    with pytest.raises(AssertionError, match=message):
        check_space("broken", spatial_dims=(2,), seeds=range(4))


def test_an_unregistered_space_is_refused(scratch_registry: list[str]) -> None:
    with pytest.raises(AssertionError, match="has no name"):
        check_space(TinyBasicUNetSpace, spatial_dims=(2,))
