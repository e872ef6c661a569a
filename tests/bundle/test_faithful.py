"""The bundle repeats training: same preprocessed arrays, same network outputs as mednas's own evaluation.

Includes a retrain record fabricated per docs/run-directory.md (a patch-trained candidate) to cover
sliding-window inference.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import mednas
from mednas.data import Case, Preprocessing, prepare_case


def _case(datalist: Path, index: int, problem: str) -> Case:
    entry = json.loads(datalist.read_text())["training"][index]
    label = str(datalist.parent / entry["label"]) if problem == "segmentation" else int(entry["label"])
    return Case("c-test", "p-test", (str(datalist.parent / entry["image"]),), label)


def _preprocessed(model, path: str) -> np.ndarray:  # noqa: ANN001
    from mednas.io import read_image

    image = read_image(path)
    from monai.data import MetaTensor

    data = model._pre(
        {
            "image": MetaTensor(
                torch.from_numpy(image.array.astype(np.float32)), affine=torch.as_tensor(image.affine)
            )
        }
    )
    return np.asarray(data["image"])


@pytest.mark.parametrize("which", ["cls_bundle", "seg_bundle"])
def test_bundle_preprocessing_is_training_preprocessing(which: str, request: pytest.FixtureRequest) -> None:
    b = request.getfixturevalue(which)
    model = mednas.load(b.path)
    p = model.pipeline
    prep = Preprocessing(p.problem, p.spatial_dims, p.in_channels, p.n_classes, p.normalize, p.ct_window)
    for index in (0, 3):
        case = _case(b.run.datalist, index, p.problem)
        expected, _ = prepare_case(case, p.shape, prep)  # what the search and retrain trained on
        got = _preprocessed(model, case.images[0])
        np.testing.assert_allclose(got[(slice(None), *[slice(0, s) for s in p.shape])], expected, atol=1e-5)


def test_bundle_inference_is_training_evaluation(seg_bundle: SimpleNamespace) -> None:
    from mednas.train import predict

    model = mednas.load(seg_bundle.path)
    p = model.pipeline
    case = _case(seg_bundle.run.datalist, 1, p.problem)
    x = _preprocessed(model, case.images[0])
    x = x[(slice(None), *[slice(0, s) for s in p.shape])]  # the unpadded training-shape array
    ours = predict(
        model._network, x[None], problem="segmentation", batch_size=1, device="cpu", divisor=p.divisor
    )
    from mednas.bundle._pipeline import instantiate

    padded = torch.from_numpy(_preprocessed(model, case.images[0]))[None]
    with torch.no_grad():
        logits = instantiate(*p.inferer())(padded, model._network)
    bundle = logits[(slice(None), slice(None), *[slice(0, s) for s in p.shape])].argmax(dim=1).numpy()
    np.testing.assert_array_equal(bundle, ours)


def test_patch_trained_candidate_uses_sliding_windows(seg_bundle: SimpleNamespace, tmp_path: Path) -> None:
    from mednas.bundle._pipeline import instantiate
    from mednas.train import predict

    run = Path(
        shutil.copytree(seg_bundle.run.run_dir, tmp_path / "run", ignore=shutil.ignore_patterns("bundle"))
    )
    summary = json.loads((run / "summary.json").read_text())
    n = summary["retrain"]["best"]
    record_path = run / "retrain" / str(n) / "metrics.json"
    record = json.loads(record_path.read_text())
    record["patch"] = {"size": [16, 16, 16], "overlap": 0.25}  # as retrain writes it for patch training
    record_path.write_text(json.dumps(record))
    result = mednas.export(run, formats="torchscript")
    config = json.loads((result.path / "configs" / "inference.json").read_text())
    assert config["inferer"]["_target_"] == "monai.inferers.SlidingWindowInferer"
    assert config["inferer"]["roi_size"] == [16, 16, 16] and config["inferer"]["mode"] == "gaussian"
    meta = json.loads((result.path / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == [16, 16, 16]
    assert meta["network_data_format"]["inputs"]["image"]["is_patch_data"] is True
    model = mednas.load(result.path)
    p = model.pipeline
    case = _case(seg_bundle.run.datalist, 2, p.problem)
    x = _preprocessed(model, case.images[0])
    assert x.shape[1:] == tuple(p.shape)  # whole volume, no padding: windows are padded by the inferer
    ours = predict(
        model._network,
        x[None],
        problem="segmentation",
        batch_size=1,
        device="cpu",
        divisor=p.divisor,
        patch=(16, 16, 16),
        overlap=0.25,
    )  # retrain's sliding-window validation
    with torch.no_grad():
        bundle = instantiate(*p.inferer())(torch.from_numpy(x)[None], model._network).argmax(dim=1).numpy()
    np.testing.assert_array_equal(bundle, ours)
    assert model(case.images[0]).mask.spatial_shape == tuple(p.shape)
