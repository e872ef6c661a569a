"""The conformance suite every search space passes, built-in or third-party (Optuna's ``pytest_samplers``).

:func:`check_space` samples specs for tiny contexts at odd sizes (33x34x35, as MONAI's tests do) and checks the
contract the rest of mednas relies on: prefixed parameter names, replay, JSON round trip, shapes, costs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution

from mednas.spaces._base import BaseSearchSpace, SpaceContext
from mednas.spaces._cost import estimate_cost
from mednas.spaces._plan import padded_shape, required_divisor
from mednas.spaces._registry import SPACES, create_space
from mednas.spaces._trials import RandomTrial, ReplayTrial
from mednas.spec import ArchSpec, build

__all__ = ["TINY_OPTIONS", "check_space", "check_spec"]

#: Options that make each built-in family tiny (a few thousand parameters), for fast tests of any layer.
TINY_OPTIONS: dict[str, dict[str, Any]] = {
    "resnet": {"max_depth": 1, "min_width": 2, "max_width": 16},
    "efficientnet": {
        "min_stages": 2,
        "max_stages": 3,
        "max_repeats": 1,
        "max_filters": 8,
        "expansions": [1, 2],
        "width_coefficients": [0.25],
    },
    "densenet": {
        "min_features": 4,
        "max_features": 4,
        "growth_rates": [2, 4],
        "max_layers": 2,
        "bn_sizes": [2],
    },
    "dynunet": {"max_depth": 4, "min_filters": 2, "max_filters": 8, "kernels": [3, 5]},
    "segresnet": {
        "max_depth": 3,
        "min_filters": 2,
        "max_filters": 8,
        "max_blocks_down": 1,
        "upsample_modes": ["nontrainable", "deconv", "pixelshuffle"],
    },
    "unet": {"max_depth": 4, "min_filters": 2, "max_filters": 8, "max_res_units": 1},
}

_OPTUNA_CHOICE_TYPES = (type(None), bool, int, float, str)


def check_space(
    space: BaseSearchSpace | type[BaseSearchSpace] | str,
    *,
    options: Mapping[str, Any] | None = None,
    problems: Sequence[str] | None = None,
    spatial_dims: Sequence[int] = (2, 3),
    seeds: Sequence[int] = (0, 1, 2),
    shapes: Mapping[int, Sequence[int]] | None = None,
    batch_size: int = 2,
    in_channels: int = 1,
    out_channels: int = 3,
    run: bool = True,
) -> list[ArchSpec]:
    """Check that a search space honours the mednas contract; raise ``AssertionError`` saying where not.

    For every problem the space does and every ``spatial_dims``, it builds a context at an odd proxy shape
    (default ``(s, s+1[, s+2])`` with ``s = max(33, min_input_size)``) and, for each seed, checks that:
    ``supports`` accepts it and refuses shapes below ``min_input_size``; specs sampled at ``min_input_size``
    run; every parameter name is ``"<name>."``-prefixed and categorical choices are Optuna-valid and the same
    across trials; a :class:`~mednas.testing.ReplayTrial` of the recorded params gives the same spec; the spec
    round-trips through JSON with the same hash; and (with ``run``) the built network trains one step on the
    input padded to ``required_divisor``, with outputs ``(B, C)`` (classification) or ``(B, C, *spatial)``
    (segmentation; deep supervision adds a stacked axis in train mode), every parameter receives a gradient,
    a rebuild from JSON has the same parameters, :func:`~mednas.spaces.estimate_cost` counts them exactly,
    and ``adapt_to_shape`` to twice the size keeps them.

    Args:
        space: A space instance, class, or registry name.
        options: Options for the space (ignored when an instance is given); small ones keep the check fast.
        problems: Problems to check (default: all of ``space.problems``).
        spatial_dims: Dimensionalities to check.
        seeds: Seeds of the :class:`~mednas.testing.RandomTrial` draws, one spec each.
        shapes: Proxy shape per dimensionality, to override the odd default.
        batch_size: Batch of the training step (at least 2: batch norm needs it on 1-voxel maps).
        in_channels: Image channels of the context.
        out_channels: Classes of the context.
        run: Build and run networks; ``False`` checks sampling and specs only (no torch work but meta).

    Returns:
        The specs that were checked.

    Example:
        >>> from mednas.testing import TINY_OPTIONS
        >>> len(check_space("unet", options=TINY_OPTIONS["unet"], spatial_dims=(2,), seeds=(0,))) == 1
        True
    """
    instance = _instantiate(space, options)
    name = instance.name
    if not name:
        raise AssertionError(f"{type(instance).__name__} has no name: register it with @register_space")
    if not instance.problems:
        raise AssertionError(f"search space {name!r} declares no problems")
    checked: list[ArchSpec] = []
    for problem in problems or instance.problems:
        for dims in spatial_dims:
            shape = tuple(shapes[dims]) if shapes and dims in shapes else _odd_shape(instance, dims)
            ctx = SpaceContext(problem, dims, in_channels, out_channels, shape, tuple(2 * s for s in shape))  # type: ignore[arg-type]
            reason = instance.supports(ctx)
            if reason is not None:
                raise AssertionError(f"{name}: supports() refuses the test context {ctx}: {reason}")
            _check_min_input_size(instance, ctx, seeds, batch_size)
            seen: dict[str, BaseDistribution] = {}
            for seed in seeds:
                where = f"{name} {problem} {dims}D seed {seed}"
                trial = RandomTrial(seed)
                spec = instance.sample(trial, ctx)
                _check_sampling(instance, spec, ctx, trial, seen, where)
                if run:
                    try:
                        check_spec(instance, spec, ctx, batch_size=batch_size, where=where)
                    except AssertionError:
                        raise
                    except Exception as err:
                        message = str(err).splitlines()[0] if str(err) else ""
                        raise AssertionError(f"{where}: {type(err).__name__}: {message}") from err
                checked.append(spec)
    return checked


def check_spec(
    space: BaseSearchSpace, spec: ArchSpec, ctx: SpaceContext, *, batch_size: int = 2, where: str = ""
) -> None:
    """Build ``spec``, train one step on a random batch, and check shapes, gradients, rebuild and cost.

    Args:
        space: The space that sampled ``spec`` (for ``required_divisor`` and ``adapt_to_shape``).
        spec: The candidate.
        ctx: The context it was sampled for; inputs are ``(batch_size, C, *ctx.input_shape)``, padded.
        batch_size: Batch of the training step.
        where: Prefix for failure messages.

    Raises:
        AssertionError: Naming the first broken property.
    """
    import torch

    where = where or f"{space.name} {ctx.problem} {ctx.spatial_dims}D"
    shape = padded_shape(ctx.input_shape, _checked_divisor(space, spec, ctx, where))

    torch.manual_seed(0)
    net = build(spec)
    n_params = sum(p.numel() for p in net.parameters())
    _expect(n_params > 0, where, "the network has no parameters")
    x = torch.randn(batch_size, ctx.in_channels, *shape)
    expected = (
        (batch_size, ctx.out_channels)
        if ctx.problem == "classification"
        else (batch_size, ctx.out_channels, *shape)
    )
    _check_training_step(net, spec, x, expected, where)
    _check_rebuild_and_cost(space, spec, ctx, net, shape, batch_size, where)


def _checked_divisor(
    space: BaseSearchSpace, spec: ArchSpec, ctx: SpaceContext, where: str
) -> tuple[int, ...]:
    """The space's ``required_divisor`` for ``spec``, checked for shape and against the registry's answer."""
    divisor = tuple(space.required_divisor(spec))
    _expect(
        len(divisor) == ctx.spatial_dims and all(isinstance(d, int) and d >= 1 for d in divisor),
        where,
        f"required_divisor must give one positive int per axis, got {divisor}",
    )
    if spec.family in SPACES and SPACES.get(spec.family) is type(space):
        _expect(
            required_divisor(spec) == divisor,
            where,
            "mednas.spaces.required_divisor disagrees with the space",
        )
    return divisor


def _check_training_step(net: Any, spec: ArchSpec, x: Any, expected: tuple[int, ...], where: str) -> None:
    """One train-mode step (output shape, a finite gradient for every parameter) and an eval-mode pass."""
    import torch

    net.train()
    y = net(x)
    if spec.kwargs.get("deep_supervision") and y.ndim == len(expected) + 1:
        heads = 1 + int(spec.kwargs.get("deep_supr_num", 1))
        expected_train: tuple[int, ...] = (expected[0], heads, *expected[1:])
    else:
        expected_train = expected
    _expect(
        tuple(y.shape) == expected_train,
        where,
        f"train-mode output {tuple(y.shape)}, expected {expected_train} for input {tuple(x.shape)}",
    )
    (y.float() ** 2).mean().backward()
    no_grad = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    _expect(not no_grad, where, f"parameters without gradient after backward: {no_grad[:5]}")
    bad = [n for n, p in net.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    _expect(not bad, where, f"non-finite gradients in {bad[:5]}")

    net.eval()
    with torch.no_grad():
        y_eval = net(x)
    _expect(
        tuple(y_eval.shape) == expected, where, f"eval-mode output {tuple(y_eval.shape)}, expected {expected}"
    )


def _check_rebuild_and_cost(
    space: BaseSearchSpace,
    spec: ArchSpec,
    ctx: SpaceContext,
    net: Any,
    shape: tuple[int, ...],
    batch_size: int,
    where: str,
) -> None:
    """A rebuild from JSON has the same parameters; ``estimate_cost`` counts them; ``adapt_to_shape`` keeps them."""
    n_params = sum(p.numel() for p in net.parameters())
    rebuilt = build(ArchSpec.from_json(spec.to_json()))
    shapes_a = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    shapes_b = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    _expect(shapes_a == shapes_b, where, "a network rebuilt from the JSON spec has different parameters")

    cost = estimate_cost(spec, ctx.input_shape, batch_size)
    _expect(
        cost.params == n_params,
        where,
        f"estimate_cost counts {cost.params} parameters, the network has {n_params}",
    )
    _expect(
        cost.input_shape == shape, where, f"estimate_cost ran on {cost.input_shape}, training pads to {shape}"
    )
    _expect(cost.macs > 0 and cost.activation_bytes > 0, where, f"estimate_cost gives no work: {cost}")

    adapted = space.adapt_to_shape(spec, ctx.full_shape)
    _expect(
        isinstance(adapted, ArchSpec) and adapted.target == spec.target,
        where,
        "adapt_to_shape changed the class",
    )
    full_cost = estimate_cost(adapted, ctx.full_shape, batch_size)
    _expect(
        full_cost.params == n_params, where, "adapt_to_shape changed the parameters (weights must carry over)"
    )


def _instantiate(
    space: BaseSearchSpace | type[BaseSearchSpace] | str, options: Mapping[str, Any] | None
) -> BaseSearchSpace:
    if isinstance(space, BaseSearchSpace):
        return space
    if isinstance(space, str):
        return create_space(space, **dict(options or {}))
    return space(**dict(options or {}))


def _odd_shape(space: BaseSearchSpace, dims: int) -> tuple[int, ...]:
    base = max(33, int(space.min_input_size))
    return tuple(base + i for i in range(dims))


def _check_min_input_size(
    space: BaseSearchSpace, ctx: SpaceContext, seeds: Sequence[int], batch_size: int
) -> None:
    """Check that ``min_input_size`` is the truth: accepted and runnable at it, refused below it."""
    name, low = space.name, int(space.min_input_size)
    at_min = SpaceContext(
        ctx.problem, ctx.spatial_dims, ctx.in_channels, ctx.out_channels, (low,) * ctx.spatial_dims
    )
    reason = space.supports(at_min)
    _expect(
        reason is None,
        name,
        f"supports() refuses {list(at_min.input_shape)} although min_input_size is {low}: {reason}",
    )
    for seed in seeds:
        spec = space.sample(RandomTrial(seed), at_min)
        try:
            estimate_cost(spec, at_min.input_shape, max(2, batch_size))
        except ValueError as err:
            raise AssertionError(
                f"{name} seed {seed}: a spec sampled at min_input_size {low} does not run: {err}"
            ) from err
    if low > 1:
        below = SpaceContext(
            ctx.problem, ctx.spatial_dims, ctx.in_channels, ctx.out_channels, (low - 1,) * ctx.spatial_dims
        )
        _expect(
            space.supports(below) is not None,
            name,
            f"supports() accepts {list(below.input_shape)}, below min_input_size {low}",
        )


def _check_sampling(
    space: BaseSearchSpace,
    spec: ArchSpec,
    ctx: SpaceContext,
    trial: RandomTrial,
    seen: dict[str, BaseDistribution],
    where: str,
) -> None:
    _expect(isinstance(spec, ArchSpec), where, f"sample() returned {type(spec).__name__}, not ArchSpec")
    _expect(spec.family == space.name, where, f"spec.family is {spec.family!r}, expected {space.name!r}")
    got = (spec.spatial_dims, spec.in_channels, spec.out_channels)
    want = (ctx.spatial_dims, ctx.in_channels, ctx.out_channels)
    _expect(
        got == want, where, f"spec (spatial_dims, in_channels, out_channels) is {got}, context has {want}"
    )
    unprefixed = [n for n in trial.params if not n.startswith(f"{space.name}.")]
    _expect(not unprefixed, where, f"parameter names must start with {space.name + '.'!r}: {unprefixed}")
    for pname, dist in trial.distributions.items():
        previous = seen.setdefault(pname, dist)
        _expect(type(previous) is type(dist), where, f"{pname}: distribution kind changes between trials")
        if isinstance(dist, CategoricalDistribution):
            odd = [c for c in dist.choices if not isinstance(c, _OPTUNA_CHOICE_TYPES)]
            _expect(not odd, where, f"{pname}: Optuna choices must be None/bool/int/float/str, got {odd}")
            # Optuna refuses a categorical whose choices change between trials of one study.
            _expect(
                previous == dist,
                where,
                f"{pname}: choices {dist.choices} differ from {previous} in another trial",
            )

    again = space.sample(RandomTrial(trial.seed), ctx)
    _expect(
        again == spec,
        where,
        "sampling twice with the same seed gives different specs (randomness outside the trial)",
    )
    replay = ReplayTrial(trial.params)
    replayed = space.sample(replay, ctx)
    _expect(
        replayed == spec and replayed.hash == spec.hash,
        where,
        "replaying the recorded params gives a different spec",
    )
    _expect(not replay.unused, where, f"replay left recorded params unused: {replay.unused}")

    text = spec.to_json()
    back = ArchSpec.from_json(text)
    _expect(
        back == spec and back.hash == spec.hash,
        where,
        "ArchSpec JSON round trip changes the spec or its hash",
    )
    _expect(
        json.loads(json.dumps(dict(spec.kwargs))) == dict(spec.kwargs),
        where,
        "kwargs are not plain JSON values",
    )


def _expect(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise AssertionError(f"{where}: {message}")
