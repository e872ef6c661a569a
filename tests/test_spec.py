"""ArchSpec: frozen, JSON round trip, stable hash, MONAI classes only, pure build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mednas.spec import ArchSpec, build

KW = {"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "features": (4, 4, 8, 8, 16, 4)}


def test_round_trip_and_hash_are_stable() -> None:
    spec = ArchSpec("monai.networks.nets.BasicUNet", KW, "basicunet", 2, 1, 2)
    again = ArchSpec.from_json(spec.to_json())
    assert again == spec and again.hash == spec.hash
    assert spec.kwargs["features"] == [4, 4, 8, 8, 16, 4]  # tuples stored as JSON lists
    # key order does not change the hash
    assert ArchSpec("monai.networks.nets.BasicUNet", dict(reversed(list(KW.items())))).hash == spec.hash
    assert len(spec.hash) == 16 and set(spec.hash) <= set("0123456789abcdef")


def test_hash_mismatch_in_file_is_refused() -> None:
    data = ArchSpec("monai.networks.nets.BasicUNet", KW).to_dict()
    data["kwargs"]["features"][0] = 8
    with pytest.raises(ValueError, match="hash mismatch"):
        ArchSpec.from_dict(data)


def test_only_monai_networks() -> None:
    with pytest.raises(ValueError, match="monai.networks.nets"):
        ArchSpec("os.system", {})


def test_build_from_json_matches_parameter_count() -> None:
    spec = ArchSpec("monai.networks.nets.BasicUNet", KW)
    n1 = sum(p.numel() for p in build(spec).parameters())
    n2 = sum(p.numel() for p in build(ArchSpec.from_dict(json.loads(spec.to_json()))).parameters())
    assert n1 == n2 > 0


def test_kwargs_must_be_json_values() -> None:
    with pytest.raises(TypeError, match="JSON values"):
        ArchSpec("monai.networks.nets.BasicUNet", {"x": object()})


def test_api_functions_survive_importing_their_subpackages() -> None:
    import importlib
    import inspect

    import mednas

    # Verbs are functions, packages nouns: importing a package never replaces a verb (no callable modules).
    for verb, package in (
        ("search", "study"),
        ("retrain", "retraining"),
        ("export", "bundle"),
        ("report", "reporting"),
    ):
        importlib.import_module(f"mednas.{package}")
        assert inspect.isfunction(getattr(mednas, verb)), f"mednas.{verb} is no longer a function"
        assert not callable(importlib.import_module(f"mednas.{package}")), f"mednas.{package} is callable"
    assert not (Path(mednas.__file__).parent / "_callable.py").exists()
