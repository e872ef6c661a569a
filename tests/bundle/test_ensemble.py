"""``mednas export RUN --ensemble``: the fold models of ``mednas retrain --folds`` as one MONAI bundle whose network
averages their probabilities; MONAI's checks, MONAI-alone loading (mednas not importable), TorchScript and ONNX
parity, and the ensemble's and best member's test metrics in the model card."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mednas import api
from mednas.errors import ConfigError, RunDirError
from tests._bundles import schema_path

K = 3

# Runs in a fresh interpreter where `import mednas` fails: MONAI and torch alone build, check and run the bundle.
_MONAI_ALONE = r"""
import json, sys
sys.modules["mednas"] = None  # any import of mednas now raises ImportError
import torch
from monai.bundle import ConfigParser, verify_metadata, verify_net_in_out

root, image, schema = sys.argv[1], sys.argv[2], sys.argv[3]
meta, config = root + "/configs/metadata.json", root + "/configs/inference.json"
verify_net_in_out(net_id="network_def", meta_file=meta, config_file=config, bundle_root=root)
if schema:
    verify_metadata(meta_file=meta, filepath=schema)
parser = ConfigParser()
parser.read_config(config)
parser["bundle_root"] = root
net = parser.get_parsed_content("network_def")
net.load_state_dict(torch.load(root + "/models/model.pt", weights_only=True))
net.eval()
data = parser.get_parsed_content("preprocessing")({"image": image})
with torch.no_grad():
    data["pred"] = parser.get_parsed_content("inferer")(data["image"][None], net)[0]
data = parser.get_parsed_content("postprocessing")(data)
try:
    import mednas  # noqa: F401
    blocked = False
except ImportError:
    blocked = True
print(json.dumps({"pred": data["pred"].tolist(), "finding_score": float(data["finding_score"][0]), "blocked": blocked}))
"""


@pytest.fixture(scope="module")
def folded_run(tmp_path_factory: pytest.TempPathFactory, cls_run: SimpleNamespace) -> SimpleNamespace:
    """The tiny classification search, its best candidate retrained with 3 folds (1 epoch)."""
    run_dir = Path(shutil.copytree(cls_run.run_dir, tmp_path_factory.mktemp("ensemble") / "run"))
    shutil.rmtree(run_dir / "bundle", ignore_errors=True)
    result = api.retrain(run_dir, top_k=1, folds=K, epochs=1, n_resamples=50, show_progress=False)
    return SimpleNamespace(run_dir=run_dir, result=result, datalist=cls_run.datalist)


@pytest.fixture(scope="module")
def ensemble_bundle(folded_run: SimpleNamespace) -> SimpleNamespace:
    result = api.export(
        folded_run.run_dir, folded_run.run_dir / "ensemble", ensemble=True, schema=schema_path()
    )
    return SimpleNamespace(path=result.path, result=result, run=folded_run)


def test_ensemble_needs_a_fold_retrain(cls_run: SimpleNamespace) -> None:
    with pytest.raises(RunDirError, match=r"mednas retrain .* --folds K") as err:
        api.export(cls_run.run_dir, cls_run.run_dir / "no-ensemble", ensemble=True)
    assert "\n" not in str(err.value) and not (cls_run.run_dir / "no-ensemble").exists()
    with pytest.raises(ConfigError, match="torchscript"):
        api.export(cls_run.run_dir, formats="onnx", ensemble=True)


@pytest.mark.slow
def test_ensemble_bundle_passes_monai_checks_and_records_both_models(
    ensemble_bundle: SimpleNamespace,
) -> None:
    result = ensemble_bundle.result
    assert result.checks["net_in_out"] == "monai.bundle.verify_net_in_out passed"
    assert result.checks["metadata"].startswith(("MONAI schema", "required fields"))
    for fmt in ("torchscript", "onnx"):
        assert result.conversions[fmt]["max_abs_diff"] <= 1e-4
    m = result.metadata["mednas"]
    ens = json.loads((ensemble_bundle.run.run_dir / "retrain" / "ensemble.json").read_text())
    assert m["ensemble"]["k"] == K and len(m["ensemble"]["members"]) == K
    assert m["metrics"]["test"]["objective"]["value"] == ens["test"]["metrics"]["objective"]["value"]
    member_test = m["ensemble"]["best_member"]["metrics"]["test"]["objective"]
    assert member_test["value"] == ens["best_member"]["test"]["metrics"]["objective"]["value"]
    assert m["pipeline"]["threshold"] == pytest.approx(ens["operating_point"]["threshold"])
    assert m["pipeline"]["temperature"] == pytest.approx(ens["temperature"])
    config = json.loads((ensemble_bundle.path / "configs" / "inference.json").read_text())
    assert config["network_def"]["_target_"] == "torch.jit.load"
    card = (ensemble_bundle.path / "docs" / "README.md").read_text()
    assert "## Ensemble" in card and "ensemble, held-out test" in card
    assert f"best member (fold {m['ensemble']['best_member']['fold']}), held-out test" in card


@pytest.mark.slow
def test_torchscript_and_onnx_match_the_eager_ensemble(ensemble_bundle: SimpleNamespace) -> None:
    import onnxruntime as ort
    import torch

    from mednas.spec import ArchSpec, build
    from mednas.train._ensemble import EnsembleNet

    members = []
    for d in ensemble_bundle.result.metadata["mednas"]["ensemble"]["members"]:
        folder = ensemble_bundle.run.run_dir / d
        net = build(ArchSpec.from_dict(json.loads((folder / "spec.json").read_text())))
        net.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
        members.append(net.eval())
    eager = EnsembleNet(members).eval()
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = eager(x).numpy()
        script = torch.jit.load(str(ensemble_bundle.path / "models" / "model.ts"))(x).numpy()
    session = ort.InferenceSession(str(ensemble_bundle.path / "models" / "model.onnx"))
    onnx_out = session.run(None, {"image": x.numpy()})[0]
    np.testing.assert_allclose(np.exp(want).sum(1), 1.0, atol=1e-5)  # log of mean probabilities
    assert np.abs(script - want).max() <= 1e-4 and np.abs(onnx_out - want).max() <= 1e-4


@pytest.mark.slow
def test_bundle_loads_and_predicts_with_monai_alone(ensemble_bundle: SimpleNamespace, tmp_path: Path) -> None:
    import mednas

    image = sorted((ensemble_bundle.run.datalist.parent / "images").glob("*.png"))[0]
    schema = schema_path()
    proc = subprocess.run(
        [sys.executable, "-c", _MONAI_ALONE, str(ensemble_bundle.path), str(image), str(schema or "")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    assert theirs["blocked"] is True
    ours = mednas.load(ensemble_bundle.path, backend="torchscript")(image)
    np.testing.assert_allclose(theirs["pred"], list(ours.probabilities.values()), atol=1e-5)
    assert theirs["finding_score"] == pytest.approx(ours.finding_score, abs=1e-5)


@pytest.mark.slow
def test_mednas_loads_the_ensemble_with_every_backend(ensemble_bundle: SimpleNamespace) -> None:
    """The default torch backend rebuilds the K members from the spec; its outputs are the TorchScript file's."""
    import torch

    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    outs = {}
    for backend in ("torch", "torchscript", "onnx"):
        model = api.load(ensemble_bundle.path, backend=backend)
        with torch.no_grad():
            out = model._network(x)
        outs[backend] = out.numpy() if hasattr(out, "numpy") else np.asarray(out)
    assert np.abs(outs["torch"] - outs["torchscript"]).max() <= 1e-5
    assert np.abs(outs["torch"] - outs["onnx"]).max() <= 1e-4


@pytest.mark.slow
def test_a_segmentation_ensemble_exports_checks_and_predicts(
    seg_run: SimpleNamespace, tmp_path: Path
) -> None:
    """Segmentation: 2 folds of the tiny 3D search's best, exported as one network; MONAI's checks and parity hold,
    and mednas predicts with it (the sliding-window inferer runs the ensemble's averaged output)."""
    import torch

    run_dir = Path(shutil.copytree(seg_run.run_dir, tmp_path / "run"))
    shutil.rmtree(run_dir / "bundle", ignore_errors=True)
    retrained = api.retrain(run_dir, top_k=1, folds=2, epochs=1, n_resamples=50, show_progress=False)
    assert retrained is not None
    result = api.export(run_dir, tmp_path / "ensemble", ensemble=True, schema=schema_path())
    assert result.checks["net_in_out"] == "monai.bundle.verify_net_in_out passed"
    for fmt in ("torchscript", "onnx"):
        assert result.conversions[fmt]["max_abs_diff"] <= 1e-4
    m = result.metadata["mednas"]
    assert m["ensemble"]["k"] == 2 and "dice" in m["ensemble"]["metrics"]["test"]
    model = api.load(result.path)
    spatial = result.metadata["network_data_format"]["inputs"]["image"]["spatial_shape"]
    x = torch.rand(1, 1, *[int(s) for s in spatial], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model._network(x)
    probs = out.exp().sum(1)  # log of the mean probabilities: they sum to one at every voxel
    assert torch.allclose(probs, torch.ones_like(probs), atol=1e-5)


@pytest.mark.parametrize("k", ["3", 0, 65, True, None])
def test_a_broken_ensemble_size_in_the_metadata_is_refused_in_one_line(k: object, tmp_path: Path) -> None:
    from mednas.bundle._predict import BundleError, _ensemble_size

    ens = {} if k is None else {"k": k}
    with pytest.raises(
        BundleError, match=r"metadata\.json: mednas\.ensemble\.k must be an integer from 1 to 64"
    ):
        _ensemble_size({"ensemble": ens}, tmp_path / "metadata.json")
    assert _ensemble_size({}, tmp_path / "metadata.json") == 0
    assert _ensemble_size({"ensemble": {"k": 3}}, tmp_path / "metadata.json") == 3
