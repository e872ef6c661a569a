"""Temperature scaling in an exported classification bundle: carried, applied everywhere, shown in the model card."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import mednas
from mednas.bundle._model_card import model_card


def _meta(bundle: Path) -> dict:
    return json.loads((bundle / "configs" / "metadata.json").read_text())


def _image(cls_bundle: SimpleNamespace) -> Path:
    entry = json.loads(cls_bundle.run.datalist.read_text())["training"][0]
    return cls_bundle.run.datalist.parent / entry["image"]


def test_bundle_carries_the_temperature_fitted_on_validation(cls_bundle: SimpleNamespace) -> None:
    m = _meta(cls_bundle.path)["mednas"]
    cal = m["temperature_scaling"]
    assert (
        cal["fitted_on"] == "validation" and "export" in cal["fitted_at"]
    )  # a proxy candidate: fitted at export
    t = m["pipeline"]["temperature"]
    assert t == pytest.approx(cal["temperature"]) and t > 0
    assert cal["nll_after"] <= cal["nll_before"] + 1e-9
    assert isinstance(cal["warnings"], list) and isinstance(cal["ece_before"], float)
    # The operating point is chosen on the calibrated scores and travels with the temperature.
    assert m["operating_point"]["chosen_on"] == "validation"
    # MONAI's own config applies the same temperature before the softmax.
    post = json.loads((cls_bundle.path / "configs" / "inference.json").read_text())["postprocessing"][
        "transforms"
    ]
    if t != 1.0:
        assert post[0]["_target_"].endswith("Lambdad") and f"x / {t!r}" in post[0]["func"]
        assert post[1]["_target_"].endswith("Activationsd")


def test_load_gives_softmax_of_logits_over_temperature(cls_bundle: SimpleNamespace) -> None:
    import torch
    from monai.data import MetaTensor

    from mednas.io import read_image

    model = mednas.load(cls_bundle.path)
    t = model.pipeline.temperature
    assert t is not None
    image = read_image(_image(cls_bundle))
    got = model(image).probabilities
    # By hand: preprocessing, the network's logits, then softmax(logits / T).
    array = model._conform(image, "image")
    data = model._pre({"image": MetaTensor(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)))})
    with torch.no_grad():
        logits = model._network(data["image"][None])[0].double().numpy()
    z = logits / t
    expected = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    np.testing.assert_allclose([got[n] for n in model.class_names], expected, rtol=1e-5, atol=1e-6)
    if abs(t - 1.0) > 1e-3:  # and not the uncalibrated softmax
        z1 = logits - logits.max()
        assert not np.allclose(expected, np.exp(z1) / np.exp(z1).sum(), atol=1e-6)


def test_model_card_shows_ece_before_after_and_where_the_point_holds(cls_bundle: SimpleNamespace) -> None:
    card = (cls_bundle.path / "docs" / "README.md").read_text()
    cal = _meta(cls_bundle.path)["mednas"]["temperature_scaling"]
    assert f"{cal['ece_before']:.3f} before, {cal['ece_after']:.3f} after" in card
    assert f"temperature **{cal['temperature']:.3f}**" in card
    assert "chosen on the validation distribution" in card and "mednas evaluate" in card


def test_model_card_warnings_appear_when_they_apply(cls_bundle: SimpleNamespace) -> None:
    from mednas.metrics import operating_point_warnings

    meta = copy.deepcopy(_meta(cls_bundle.path))
    op = {"threshold": 0.025, "rule": "sensitivity_at_specificity>=0.8"}
    truth = np.r_[np.zeros(40, int), np.ones(60, int)]
    meta["mednas"]["operating_point"] = {**op, "sensitivity": 0.9, "specificity": 0.8}
    meta["mednas"]["pipeline"]["threshold"] = 0.025
    meta["mednas"]["temperature_scaling"].update(
        ece_before=0.14, ece_after=0.12, warnings=operating_point_warnings(op, ece_after=0.12, truth=truth)
    )
    card = model_card(meta)
    assert "0.140 before, 0.120 after" in card
    assert "WARNING:** extreme threshold 0.025" in card
    assert "ECE 0.120 after calibration exceeds 0.1" in card
    assert "only 40 validation cases without the finding" in card
    # None of them when nothing applies.
    meta["mednas"]["temperature_scaling"]["warnings"] = operating_point_warnings(
        {"threshold": 0.4, "rule": "youden"},
        ece_after=0.03,
        truth=np.r_[np.zeros(150, int), np.ones(120, int)],
    )
    assert "WARNING" not in model_card(meta)
