"""Every built-in family passes the conformance suite in 2D and 3D, and honours its shape rules and options."""

from __future__ import annotations

import pytest

from mednas.spaces import SpaceContext, create_space, estimate_cost, padded_shape, required_divisor
from mednas.testing import TINY_OPTIONS, RandomTrial, check_space

BUILTIN = ["densenet", "dynunet", "efficientnet", "resnet", "segresnet", "unet"]


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", BUILTIN)
def test_family_passes_the_conformance_suite(name: str, dims: int) -> None:
    specs = check_space(name, options=TINY_OPTIONS[name], spatial_dims=(dims,), seeds=(0, 1, 2))
    assert len(specs) == 3 * len(create_space(name).problems)
    assert len({spec.hash for spec in specs}) > 1, (
        "three seeds gave one architecture: the space does not vary"
    )


def _ctx(problem: str, shape: tuple[int, ...], out_channels: int = 2) -> SpaceContext:
    return SpaceContext(problem, len(shape), 1, out_channels, shape)  # type: ignore[arg-type]


def test_densenet_refuses_inputs_below_29_voxels() -> None:
    space = create_space("densenet")
    reason = space.supports(_ctx("classification", (16, 16)))
    assert reason is not None and "29" in reason and "[16, 16]" in reason
    assert space.supports(_ctx("classification", (29, 29))) is None
    # The refusal is the truth: the network really fails at 28 voxels.
    spec = space.sample(RandomTrial(0), _ctx("classification", (64, 64)))
    with pytest.raises(ValueError, match="too small"):
        estimate_cost(spec, (28, 28), batch_size=2)


@pytest.mark.parametrize("name", BUILTIN)
def test_family_refuses_the_other_problem_and_tiny_inputs(name: str) -> None:
    space = create_space(name)
    other = "segmentation" if space.problems == ("classification",) else "classification"
    assert "does not do" in (space.supports(_ctx(other, (64, 64))) or "")
    assert space.supports(_ctx(space.problems[0], (4, 4, 4))) is not None


def test_dynunet_strides_follow_an_anisotropic_shape() -> None:
    space = create_space("dynunet", deep_supervision=[False])
    ctx = _ctx("segmentation", (64, 64, 16))
    for seed in range(10):
        spec = space.sample(RandomTrial(seed), ctx)
        strides = spec.kwargs["strides"]
        assert strides[0] == [1, 1, 1]
        assert spec.kwargs["upsample_kernel_size"] == strides[1:]
        divisor = required_divisor(spec)
        # z (16 voxels) may be halved twice at most: its map stays >= 4 voxels.
        assert divisor[2] <= 4 and divisor[0] == divisor[1] == 2 ** (len(strides) - 1)
        assert all(s // d >= 4 for s, d in zip(ctx.input_shape, divisor))
        assert spec.kwargs["deep_supervision"] is False


def test_odd_shapes_are_padded_to_the_stride_product() -> None:
    space = create_space("dynunet")
    ctx = _ctx("segmentation", (33, 34, 35))
    spec = space.sample(RandomTrial(1), ctx)
    divisor = required_divisor(spec)
    padded = padded_shape(ctx.input_shape, divisor)
    assert all(p % d == 0 and 0 <= p - s < d for p, s, d in zip(padded, ctx.input_shape, divisor))
    assert estimate_cost(spec, ctx.input_shape).input_shape == padded
    with pytest.raises(ValueError, match="too small or invalid"):
        estimate_cost(spec, ctx.input_shape, pad=False)


@pytest.mark.parametrize(
    ("name", "shape", "most_levels"), [("unet", (32, 64), 4), ("segresnet", (40, 16, 40), 3)]
)
def test_isotropic_families_limit_depth_by_the_smallest_axis(
    name: str, shape: tuple[int, ...], most_levels: int
) -> None:
    space = create_space(name)
    levels = set()
    for seed in range(15):
        spec = space.sample(RandomTrial(seed), _ctx("segmentation", shape))
        levels.add(len(spec.kwargs["channels"] if name == "unet" else spec.kwargs["blocks_down"]))
    assert levels == set(range(3, most_levels + 1))


def test_options_narrow_what_is_sampled() -> None:
    ctx2 = _ctx("segmentation", (64, 64))
    unet = create_space("unet", max_filters=16, max_res_units=0, kernels=[5])
    resnet = create_space("resnet", blocks=["basic"], max_width=32, max_depth=1)
    for seed in range(10):
        u = unet.sample(RandomTrial(seed), ctx2).kwargs
        assert max(u["channels"]) <= 16 and u["num_res_units"] == 0 and u["kernel_size"] == 5
        r = resnet.sample(RandomTrial(seed), _ctx("classification", (64, 64))).kwargs
        assert r["block"] == "basic" and max(r["block_inplanes"]) <= 32 and r["layers"] == [1, 1, 1, 1]


def test_resnet_stem_keeps_the_last_feature_map_at_two_voxels() -> None:
    space = create_space("resnet")
    small = [space.sample(RandomTrial(seed), _ctx("classification", (16, 16))).kwargs for seed in range(10)]
    assert all(k["conv1_t_stride"] == 1 and k["no_max_pool"] for k in small)
    large = [space.sample(RandomTrial(seed), _ctx("classification", (64, 64))).kwargs for seed in range(20)]
    assert any(k["conv1_t_stride"] == 2 or not k["no_max_pool"] for k in large)


def test_efficientnet_adapts_image_size_to_the_full_shape() -> None:
    space = create_space("efficientnet", **TINY_OPTIONS["efficientnet"])
    ctx = SpaceContext("classification", 2, 1, 2, (32, 32), full_shape=(96, 80))
    spec = space.sample(RandomTrial(0), ctx)
    assert spec.kwargs["image_size"] == 32
    full = space.adapt_to_shape(spec, ctx.full_shape)
    assert full.kwargs["image_size"] == 96 and full.hash != spec.hash
    assert estimate_cost(full, (96, 80)).params == estimate_cost(spec, (32, 32)).params


@pytest.mark.parametrize("name", BUILTIN)
def test_default_options_give_cpu_sized_networks(name: str) -> None:
    space = create_space(name)
    problem = space.problems[0]
    for shape, batch in (((64, 64), 16), ((32, 32, 32), 2)):
        for seed in range(3):
            spec = space.sample(RandomTrial(seed), _ctx(problem, shape))
            cost = estimate_cost(spec, shape, batch)
            # A few GMACs per step keeps a proxy step well under a second on two cores.
            assert cost.params < 3_000_000, (name, shape, seed, cost)
            assert cost.macs < 12e9, (name, shape, seed, cost)


def test_a_real_optuna_study_samples_every_family_without_distribution_errors() -> None:
    optuna = pytest.importorskip("optuna")
    from mednas.testing import ReplayTrial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spaces = {name: create_space(name) for name in BUILTIN}
    ctxs = {
        "classification": _ctx("classification", (64, 64)),
        "segmentation": _ctx("segmentation", (32, 32, 32)),
    }
    specs = {}

    def objective(trial: optuna.Trial) -> float:
        name = trial.suggest_categorical("family", BUILTIN)
        space = spaces[name]
        spec = space.sample(trial, ctxs[space.problems[0]])
        specs[trial.number] = spec
        return float(len(spec.to_json()))

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=10))
    study.optimize(objective, n_trials=30)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    for t in study.trials[-5:]:
        space = spaces[t.params["family"]]
        params = {k: v for k, v in t.params.items() if k != "family"}
        assert space.sample(ReplayTrial(params), ctxs[space.problems[0]]) == specs[t.number]
