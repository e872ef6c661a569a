"""The static cost estimate counts parameters exactly, scales with the batch, and rejects shapes and budgets."""

from __future__ import annotations

import json

import pytest
import torch

from mednas.spaces import Cost, SpaceContext, check_budget, create_space, estimate_cost
from mednas.spec import ArchSpec, build
from mednas.testing import TINY_OPTIONS, RandomTrial


def _unet_spec(dims: int = 2) -> ArchSpec:
    kwargs = {
        "spatial_dims": dims,
        "in_channels": 1,
        "out_channels": 2,
        "channels": [4, 8, 16],
        "strides": [2, 2],
    }
    return ArchSpec("monai.networks.nets.UNet", kwargs, "unet", dims, 1, 2)


def test_params_match_the_built_network() -> None:
    spec = _unet_spec()
    assert estimate_cost(spec, (32, 32)).params == sum(p.numel() for p in build(spec).parameters())


def test_macs_match_a_real_forward_pass() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    spec = _unet_spec(3)
    net = build(spec)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(torch.zeros(2, 1, 16, 16, 16))
    assert estimate_cost(spec, (16, 16, 16), batch_size=2).macs == counter.get_total_flops() // 2


def test_a_convolution_costs_what_arithmetic_says() -> None:
    # A 1x1 convolution regressor is easy to count by hand: the head is out * in MACs per voxel.
    spec = ArchSpec(
        "monai.networks.nets.UNet",
        {
            "spatial_dims": 2,
            "in_channels": 1,
            "out_channels": 1,
            "channels": [2, 2],
            "strides": [1],
            "kernel_size": 1,
            "up_kernel_size": 1,
            "act": None,
            "norm": None,
            "bias": False,
        },
        "",
        2,
        1,
        1,
    )
    cost = estimate_cost(spec, (8, 8))
    # down 1->2, bottom 2->2, up (2+2)->1: (2 + 4 + 4) weights, each applied at 64 voxels.
    assert cost.params == 10
    assert cost.macs == 10 * 64


def test_macs_and_activations_scale_with_the_batch() -> None:
    one = estimate_cost(_unet_spec(), (32, 32), batch_size=1)
    four = estimate_cost(_unet_spec(), (32, 32), batch_size=4)
    assert four.params == one.params
    assert four.macs == 4 * one.macs and four.activation_bytes == 4 * one.activation_bytes
    assert four.batch_size == 4


def test_activation_bytes_grow_with_the_input() -> None:
    small = estimate_cost(_unet_spec(), (32, 32))
    large = estimate_cost(_unet_spec(), (64, 64))
    assert large.activation_bytes == pytest.approx(4 * small.activation_bytes, rel=0.05)
    # At least the float32 output of the network itself.
    assert small.activation_bytes >= 2 * 32 * 32 * 4


def test_estimate_pads_to_the_family_divisor() -> None:
    assert estimate_cost(_unet_spec(), (33, 34)).input_shape == (36, 36)


def test_a_too_small_shape_is_a_value_error_naming_the_family() -> None:
    space = create_space("densenet", **TINY_OPTIONS["densenet"])
    spec = space.sample(RandomTrial(0), SpaceContext("classification", 2, 1, 2, (64, 64)))
    with pytest.raises(
        ValueError, match=r"input shape \[16, 16\] is too small or invalid for search space 'densenet'"
    ):
        estimate_cost(spec, (16, 16), batch_size=2)


def test_a_shape_of_the_wrong_dimensionality_is_refused() -> None:
    with pytest.raises(ValueError, match="does not have 2 dimensions"):
        estimate_cost(_unet_spec(), (32, 32, 32))


def test_estimate_allocates_nothing_for_a_large_network() -> None:
    spec = create_space("dynunet").sample(
        RandomTrial(0), SpaceContext("segmentation", 3, 1, 2, (128, 128, 128))
    )
    cost = estimate_cost(spec, (256, 256, 256), batch_size=2)  # tens of GiB if it were real
    assert cost.activation_mb > 4096


def test_check_budget_passes_within_and_explains_each_excess() -> None:
    cost = Cost(params=2_000_000, macs=3_000_000_000, activation_bytes=300 * 2**20)
    assert check_budget(cost) is None
    assert check_budget(cost, max_params=5_000_000, max_macs=4e9, max_activation_mb=512) is None
    assert check_budget(cost, max_params=1_000_000) == "parameters 2.0M exceed the budget of 1.0M"
    reason = check_budget(cost, max_macs=1e9, max_activation_mb=256)
    assert (
        reason
        == "MACs 3.0G exceed the budget of 1.0G; activation memory 300.0 MiB exceeds the budget of 256 MiB"
    )


def test_cost_to_dict_is_json() -> None:
    cost = estimate_cost(_unet_spec(), (32, 32), batch_size=2)
    data = json.loads(json.dumps(cost.to_dict()))
    assert data == {
        "params": cost.params,
        "macs": cost.macs,
        "activation_bytes": cost.activation_bytes,
        "input_shape": [32, 32],
        "batch_size": 2,
    }
