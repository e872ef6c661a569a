"""The registry finds the built-in families, suggests names for typos, and rejects unknown or invalid options."""

from __future__ import annotations

import pytest

from mednas.spaces import SPACES, BaseSearchSpace, create_space, list_spaces

BUILTIN = ["densenet", "dynunet", "efficientnet", "resnet", "segresnet", "unet"]


def test_all_builtin_families_are_registered() -> None:
    assert list_spaces() == BUILTIN
    assert list_spaces("*unet") == ["dynunet", "unet"]


@pytest.mark.parametrize("name", BUILTIN)
def test_each_family_is_a_base_search_space_with_its_registry_name(name: str) -> None:
    space = create_space(name)
    assert isinstance(space, BaseSearchSpace)
    assert space.name == name and SPACES.get(name) is type(space)
    assert space.problems and space.min_input_size > 1
    assert space.options == space.default_options


def test_unknown_name_suggests_the_closest_family() -> None:
    with pytest.raises(KeyError, match="unknown search space 'resnt' \\(did you mean 'resnet'\\?\\)"):
        create_space("resnt")


def test_unknown_option_is_rejected_with_a_suggestion() -> None:
    with pytest.raises(ValueError, match="unknown option 'max_filterz' .*did you mean 'max_filters'"):
        create_space("unet", max_filterz=16)


@pytest.mark.parametrize(
    ("name", "option", "value"),
    [
        ("dynunet", "norms", ["layer"]),
        ("unet", "norms", []),
        ("segresnet", "upsample_modes", ["bicubic"]),
        ("dynunet", "min_depth", 2),
    ],
)
def test_invalid_option_values_are_rejected(name: str, option: str, value: object) -> None:
    with pytest.raises(ValueError, match=option):
        create_space(name, **{option: value})


def test_options_override_defaults() -> None:
    space = create_space("dynunet", max_filters=32)
    assert space.options["max_filters"] == 32
    assert space.options["min_depth"] == space.default_options["min_depth"]
