"""Carrying weights: exact copies, overlapping slices, fresh tensors, across input shapes and between candidates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mednas.data import ArrayData
from mednas.errors import RunDirError
from mednas.spaces import RandomTrial, SpaceContext, create_space, list_spaces
from mednas.spec import ArchSpec, build
from mednas.testing import TINY_OPTIONS
from mednas.train import (
    Transfer,
    carries_across_shapes,
    load_weights,
    most_similar,
    same_structure,
    save_weights,
    seed_everything,
    transfer_weights,
)


def _cnn(width: int = 4, kernel: int = 3, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, width, kernel, padding=kernel // 2),
        torch.nn.BatchNorm2d(width),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(width, 2),
    )


def _trained_stats(net: torch.nn.Module, seed: int = 5) -> torch.nn.Module:
    """Move the batch-norm running statistics and counter away from their defaults, as training would."""
    gen = torch.Generator().manual_seed(seed)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(4, 1, 9, 9, generator=gen) * 2 + 1)
    return net


def _clone(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_exact_copy_reproduces_outputs_bit_for_bit() -> None:
    src = _trained_stats(_cnn(seed=0))
    dst = _cnn(seed=1)
    x = torch.randn(3, 1, 9, 9, generator=torch.Generator().manual_seed(2))
    src.eval(), dst.eval()
    assert not torch.equal(src(x), dst(x))

    transfer = transfer_weights(src.state_dict(), dst)

    assert transfer == Transfer(exact=len(src.state_dict()), sliced=0, fresh=0, fraction=1.0)
    assert torch.equal(src(x), dst(x))
    assert int(dst[1].num_batches_tracked) == 3  # buffers count and are copied like weights
    assert torch.equal(dst[1].running_mean, src[1].running_mean)
    assert same_structure(src.state_dict(), dst)


def test_a_wider_network_gets_the_overlapping_slice_and_keeps_its_own_init_elsewhere() -> None:
    src, dst = _trained_stats(_cnn(width=4, seed=0)), _cnn(width=6, seed=1)
    before = _clone(dst)

    transfer = transfer_weights(src.state_dict(), dst)

    s, d = src.state_dict(), dst.state_dict()
    assert torch.equal(d["0.weight"][:4], s["0.weight"])  # output channels from index 0
    assert torch.equal(d["0.weight"][4:], before["0.weight"][4:])
    assert torch.equal(d["1.running_var"][:4], s["1.running_var"])
    assert torch.equal(d["1.running_var"][4:], before["1.running_var"][4:])
    assert torch.equal(d["5.weight"][:, :4], s["5.weight"])  # input features from index 0
    assert torch.equal(d["5.weight"][:, 4:], before["5.weight"][:, 4:])
    assert torch.equal(d["5.bias"], s["5.bias"])  # same shape: copied whole
    assert int(d["1.num_batches_tracked"]) == 3
    # Sliced: conv weight and bias, bn weight, bias, mean, var, linear weight; exact: the counter and linear bias.
    assert (transfer.exact, transfer.sliced, transfer.fresh) == (2, 7, 0)
    assert not same_structure(src.state_dict(), dst)


def test_a_narrower_network_gets_the_leading_block() -> None:
    src, dst = _cnn(width=6, seed=0), _cnn(width=4, seed=1)
    transfer = transfer_weights(src.state_dict(), dst)
    assert torch.equal(dst.state_dict()["0.weight"], src.state_dict()["0.weight"][:4])
    assert torch.equal(dst.state_dict()["5.weight"], src.state_dict()["5.weight"][:, :4])
    assert transfer.fraction == 1.0  # every element of the smaller network came from the larger


def test_kernels_are_aligned_on_their_centres() -> None:
    src, dst = _cnn(kernel=3, seed=0), _cnn(kernel=5, seed=1)
    before = _clone(dst)
    transfer_weights(src.state_dict(), dst)
    w, w0 = dst.state_dict()["0.weight"], before["0.weight"]
    assert torch.equal(w[:, :, 1:4, 1:4], src.state_dict()["0.weight"])
    ring = torch.ones(5, 5, dtype=torch.bool)
    ring[1:4, 1:4] = False
    assert torch.equal(w[:, :, ring], w0[:, :, ring])

    # A 5x5 kernel into a 3x3 one: the centre taps.
    small = _cnn(kernel=3, seed=2)
    transfer_weights(dst.state_dict(), small)
    assert torch.equal(small.state_dict()["0.weight"], w[:, :, 1:4, 1:4])


def test_other_axes_missing_names_and_empty_overlaps_stay_fresh() -> None:
    dst = _cnn(seed=1)
    before = _clone(dst)
    src = {
        "0.weight": torch.zeros(4, 9),  # two axes where dst has four
        "0.bias": torch.zeros(0),  # nothing overlaps
        "unrelated.weight": torch.zeros(3),  # ignored
        "5.bias": torch.full((2,), 7.0),
    }
    transfer = transfer_weights(src, dst)
    after = dst.state_dict()
    assert torch.equal(after["0.weight"], before["0.weight"])
    assert torch.equal(after["0.bias"], before["0.bias"])
    assert torch.equal(after["5.bias"], torch.full((2,), 7.0))
    assert (transfer.exact, transfer.sliced, transfer.fresh) == (1, 0, len(before) - 1)


def test_fraction_counts_copied_elements_over_destination_elements() -> None:
    dst = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    # dst: 12 + 3 (linear) + 3 + 3 + 3 + 3 + 1 (bn: weight, bias, mean, var, counter) = 28 elements.
    src = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.BatchNorm1d(3))
    assert transfer_weights(src.state_dict(), dst) == Transfer(
        exact=5, sliced=2, fresh=0, fraction=(8 + 2 + 13) / 28
    )

    # LayerNorm has the weight and bias of batch norm, not its running statistics and counter.
    src = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.LayerNorm(3))
    assert transfer_weights(src.state_dict(), dst) == Transfer(
        exact=2, sliced=2, fresh=3, fraction=(8 + 2 + 6) / 28
    )

    assert transfer_weights({}, dst) == Transfer(exact=0, sliced=0, fresh=7, fraction=0.0)
    assert transfer_weights({}, torch.nn.ReLU()) == Transfer(exact=0, sliced=0, fresh=0, fraction=1.0)


def test_same_structure_needs_every_name_and_shape() -> None:
    state = _cnn().state_dict()
    assert same_structure(state, _cnn(seed=3))
    assert not same_structure({k: v for k, v in state.items() if k != "1.num_batches_tracked"}, _cnn())
    assert not same_structure({**state, "extra": torch.zeros(1)}, _cnn())
    assert not same_structure(state, _cnn(kernel=5))


# What each built-in family does when its input shape grows (found by the test below, recorded in the
# module docstring of mednas/train/_inherit.py): every one builds the same state dict at both shapes.
CARRIES = {
    "densenet": True,
    "dynunet": True,
    "efficientnet": True,
    "resnet": True,
    "segresnet": True,
    "unet": True,
}


def _sample(name: str, shape: tuple[int, ...], full: tuple[int, ...], seed: int = 0) -> ArchSpec:
    space = create_space(name, **TINY_OPTIONS.get(name, {}))
    ctx = SpaceContext(space.problems[0], len(shape), 1, 2, shape, full)
    return space.sample(RandomTrial(seed), ctx)


@pytest.mark.parametrize("name", list_spaces())
def test_which_families_carry_their_weights_from_16_to_32_pixels(name: str) -> None:
    space = create_space(name, **TINY_OPTIONS.get(name, {}))
    # DenseNet needs 29 pixels per axis: its ladder step is 32 -> 64.
    small = (16, 16) if space.min_input_size <= 16 else (32, 32)
    large = tuple(2 * s for s in small)
    assert name in CARRIES, f"record whether the new family {name!r} carries across shapes"
    for seed in (0, 1):
        spec = _sample(name, small, large, seed)
        assert carries_across_shapes(space, spec, small, large) is CARRIES[name], (name, seed)
        if CARRIES[name]:
            # Then the lower shape's trained weights load strictly into the larger shape's network.
            with torch.device("meta"):
                big = build(space.adapt_to_shape(spec, large))
                low = build(space.adapt_to_shape(spec, small))
            assert same_structure(low.state_dict(), big)


def test_a_3d_unet_carries_from_16_to_32_voxels() -> None:
    space = create_space("unet", **TINY_OPTIONS["unet"])
    spec = _sample("unet", (16, 16, 16), (32, 32, 32))
    assert carries_across_shapes(space, spec, (16, 16, 16), (32, 32, 32))


def test_a_family_that_sizes_layers_from_the_input_shape_does_not_carry() -> None:
    unet = type(create_space("unet"))

    class GrowsWithTheInput(unet):  # type: ignore[misc, valid-type]
        """A UNet whose first level widens with the input: its weights cannot run at another size unchanged."""

        def adapt_to_shape(self, spec: ArchSpec, shape: tuple[int, ...]) -> ArchSpec:
            channels = list(spec.kwargs["channels"])
            return spec.replace_kwargs(channels=[max(shape) // 4, *channels[1:]])

    spec = _sample("unet", (16, 16), (32, 32))
    assert not carries_across_shapes(GrowsWithTheInput(**TINY_OPTIONS["unet"]), spec, (16, 16), (32, 32))
    assert carries_across_shapes(GrowsWithTheInput(**TINY_OPTIONS["unet"]), spec, (16, 16), (18, 18))


def _unet(channels: list[int]) -> ArchSpec:
    kwargs = {
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": 2,
        "channels": channels,
        "strides": [2] * (len(channels) - 1),
        "num_res_units": 1,
    }
    return ArchSpec("monai.networks.nets.UNet", kwargs, "unet", 2, 1, 2)


def test_most_similar_picks_the_candidate_of_the_family_that_fills_the_most(tmp_path: Path) -> None:
    new = _unet([4, 8, 16])
    narrow, close = _unet([2, 4, 8]), _unet([4, 8, 12])
    other_family = _sample("resnet", (16, 16), (32, 32))
    paths = {n: tmp_path / f"{n}.pt" for n in ("narrow", "close", "resnet")}
    candidates = [(other_family, paths["resnet"]), (narrow, paths["narrow"]), (close, paths["close"])]

    assert most_similar(new, candidates) == (close, paths["close"])
    assert most_similar(new, [(narrow, paths["narrow"])]) == (narrow, paths["narrow"])
    assert most_similar(new, [(other_family, paths["resnet"])]) is None
    assert most_similar(new, []) is None
    # Equally similar: the caller's order decides.
    twin = _unet([4, 8, 12])
    assert most_similar(new, [(twin, paths["narrow"]), (close, paths["close"])]) == (twin, paths["narrow"])

    # The similarity is what transfer_weights then copies: the close parent fills more of the new network.
    fractions = {}
    for label, parent in (("narrow", narrow), ("close", close)):
        seed_everything(0)
        save_weights(paths[label], build(parent).state_dict())
        fractions[label] = transfer_weights(load_weights(paths[label]), build(new)).fraction
    assert 0 < fractions["narrow"] < fractions["close"] < 1


def test_load_weights_refuses_what_is_not_a_state_dict(tmp_path: Path) -> None:
    bad = tmp_path / "model.pt"
    torch.save({"w": [1, 2]}, bad)
    with pytest.raises(RunDirError, match="not a state dict of tensors"):
        load_weights(bad)
    with pytest.raises(RunDirError, match="not a readable state dict"):
        load_weights(tmp_path / "missing.pt")


def _toy(n: int = 16, size: int = 16) -> ArrayData:
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    images = rng.normal(0, 0.3, size=(n, 1, size, size)).astype(np.float32)
    images[labels == 1, :, 4:10, 4:10] += 1.5
    return ArrayData(
        images, labels.astype(np.int64), [f"c{i}" for i in range(n)], [f"p{i}" for i in range(n)]
    )


def test_train_candidate_starts_from_init_state(
    tiny_cls_datalist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mednas.train
    from mednas.config import load_task
    from mednas.testing import tiny_task
    from mednas.train import Fidelity, space_for, train_candidate

    task = load_task(tiny_task("classification", tiny_cls_datalist))
    spec = _sample("resnet", (16, 16), (32, 32))
    seed_everything(123)
    parent = _shifted(build(space_for(task, "resnet").adapt_to_shape(spec, (16, 16))))
    at_start: list[dict[str, torch.Tensor]] = []
    real_fit = mednas.train.fit

    def spy(model, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        at_start.append(_clone(model))
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(mednas.train, "fit", spy)
    data, fidelity = _toy(), Fidelity.proxy(task, (16, 16), epochs=1)
    carried = train_candidate(task, spec, data, data, fidelity, seed=1, device="cpu", init_state=parent)
    plain = train_candidate(task, spec, data, data, fidelity, seed=1, device="cpu")

    assert carried.transfer == Transfer(exact=len(parent), sliced=0, fresh=0, fraction=1.0)
    assert all(torch.equal(at_start[0][k], v) for k, v in parent.items())
    assert plain.transfer is None
    assert not all(torch.equal(at_start[1][k], v) for k, v in parent.items())


def _shifted(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A state dict unlike any fresh initialisation: every floating tensor shifted."""
    return {k: (v + 0.5 if v.is_floating_point() else v + 2) for k, v in net.state_dict().items()}
