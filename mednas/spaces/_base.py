"""The extension point for search spaces: sample an :class:`~mednas.spec.ArchSpec` from a trial.

A space knows nothing of datasets or studies. It samples from any *trial-like* object (Optuna's ``Trial``,
or :class:`mednas.spaces.RandomTrial` and :class:`mednas.spaces.ReplayTrial`) and returns a spec; building the network is
:func:`mednas.spec.build`, which is pure.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from mednas.spec import ArchSpec

Problem = Literal["classification", "segmentation"]


class TrialLike(Protocol):
    """What a space needs from a trial: Optuna's ``suggest_*`` methods."""

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


@dataclass(frozen=True)
class SpaceContext:
    """What a space may know about the task: the problem and the tensor shapes, nothing of the data.

    Args:
        problem: ``"classification"`` or ``"segmentation"``.
        spatial_dims: 2 or 3.
        in_channels: Image channels.
        out_channels: Classes (segmentation: including background).
        input_shape: Spatial shape the network sees during the proxy search, e.g. ``(64, 64)``.
        full_shape: Spatial shape at full fidelity (retraining, export).
    """

    problem: Problem
    spatial_dims: int
    in_channels: int
    out_channels: int
    input_shape: tuple[int, ...]
    full_shape: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if len(self.input_shape) != self.spatial_dims:
            raise ValueError(f"input_shape {self.input_shape} does not have {self.spatial_dims} dimensions")
        if not self.full_shape:
            object.__setattr__(self, "full_shape", tuple(self.input_shape))


class BaseSearchSpace(abc.ABC):
    """A family of MONAI networks and the distribution its kwargs are sampled from.

    Subclasses set :attr:`problems` and :attr:`min_input_size`, and implement :meth:`sample`. Parameter names
    must be prefixed with the family name (``"resnet.depth"``) so that families share one study.

    Args:
        **options: Family-specific bounds from the task's ``search.space_options.<name>`` (for example
            ``max_filters``); each subclass documents its own and rejects unknown ones.
    """

    #: Registry key, set by the ``@SPACES.register`` decorator's name.
    name: ClassVar[str] = ""
    #: The MONAI network class this family samples (``"monai.networks.nets.DynUNet"``); a spec may name
    #: only the classes of registered families (see :func:`mednas.spec.allowed_targets`).
    network: ClassVar[str] = ""
    #: Which problems this family can solve.
    problems: ClassVar[tuple[Problem, ...]] = ()
    #: Smallest spatial size (per axis) this family accepts.
    min_input_size: ClassVar[int] = 1
    #: Options accepted by ``__init__`` and their defaults.
    default_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, **options: Any) -> None:
        unknown = set(options) - set(self.default_options)
        if unknown:
            from mednas._registry import did_you_mean

            key = sorted(unknown)[0]
            raise ValueError(
                f"unknown option {key!r} for search space {self.name!r}"
                f"{did_you_mean(key, list(self.default_options))}; known: {', '.join(sorted(self.default_options)) or 'none'}"
            )
        self.options: dict[str, Any] = {**self.default_options, **options}

    def supports(self, ctx: SpaceContext) -> str | None:
        """Return ``None`` if this family can serve ``ctx``, else the reason it cannot."""
        if ctx.problem not in self.problems:
            return f"search space {self.name!r} does not do {ctx.problem}"
        unit = "pixels" if ctx.spatial_dims == 2 else "voxels"
        for which, shape, key in (
            ("proxy", ctx.input_shape, "proxy.shape"),
            ("full", ctx.full_shape, "training.shape"),
        ):
            if min(shape) < self.min_input_size:
                return (
                    f"search space {self.name!r} cannot run at the {which} shape {list(shape)}: it needs at least "
                    f"{self.min_input_size} {unit} per axis; drop the family from search.spaces or change the shape "
                    f"({key})"
                )
        return None

    @abc.abstractmethod
    def sample(self, trial: TrialLike, ctx: SpaceContext) -> ArchSpec:
        """Draw one architecture.

        Args:
            trial: Source of all randomness (``suggest_*`` calls with family-prefixed names).
            ctx: Problem, channels and shapes.

        Returns:
            A spec whose ``kwargs`` are the complete constructor arguments of a ``monai.networks.nets`` class.
        """

    @classmethod
    def required_divisor(cls, spec: ArchSpec) -> tuple[int, ...]:
        """Return, per spatial axis, the number that the input size must be a multiple of.

        Networks whose skip connections need exact sizes (DynUNet, UNet, SegResNet) override this. Training
        pads each input up to a multiple (``monai.transforms.DivisiblePad(k=divisor)``) and crops the output
        back; :func:`mednas.spaces.padded_shape` gives the padded size. The default: any size works.
        """
        return (1,) * spec.spatial_dims

    def adapt_to_shape(self, spec: ArchSpec, shape: tuple[int, ...]) -> ArchSpec:
        """Return ``spec`` adjusted for a different input shape (default: unchanged).

        Families whose constructor takes the image size (EfficientNet's ``image_size``) override this so
        that retraining and export at full resolution use the right static padding.
        """
        return spec
