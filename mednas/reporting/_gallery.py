"""Pictures of validation cases for the report, predicted at report time from the kept weights.

The model is the retrained best candidate (``retrain/<n>/model.pt``) where there is one, else the best proxy
trial whose weights were kept (``trials/<n>/model.pt``). It is rebuilt from its ``spec.json`` (weights loaded
with ``weights_only=True``) and run on the run's cached validation arrays at the resolution it was trained at.
The test split is never read. Cases are captioned by salted key only.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mednas.rundir import RESOLVED, TrialRecord

logger = logging.getLogger(__name__)

__all__ = ["Gallery", "build_gallery"]

_MAX_CLASSIFICATION = 96  # validation cases predicted to choose the pictures from
_MAX_SEGMENTATION = 16


@dataclass
class Gallery:
    """HTML of the case pictures, how many there are, or why there are none."""

    html: str = ""
    n_images: int = 0
    reason: str | None = None


@dataclass
class _Model:
    label: str
    weights: Path
    spec: Path
    shape: tuple[int, ...]
    divisor: tuple[int, ...] | int
    patch: tuple[int, ...] | None
    threshold: float | None


def build_gallery(run: Any, n_cases: int | None = None) -> Gallery:
    """Predict a few validation cases and return their pictures (see the module docstring).

    Args:
        run: The report's ``_Run`` (records of the run directory).
        n_cases: Number of cases (default 8 for 2D, 4 for 3D).
    """
    model_info = _choose_model(run)
    if model_info is None:
        return Gallery(
            reason="No kept weights to draw predictions from: neither retrain/<n>/model.pt nor "
            "trials/<n>/model.pt exists (search.keep_weights keeps the best trials' proxy weights)."
        )
    loaded = _load_validation(run, model_info)
    if isinstance(loaded, str):
        return Gallery(reason=loaded)
    task, data = loaded
    outputs = _predict(task, model_info, data)
    n = n_cases or (8 if task.spatial_dims == 2 else 4)
    if task.problem == "classification":
        body, count = _classification(task, data, outputs, model_info, n)
    else:
        body, count = _segmentation(task, data, outputs, n)
    intro = (
        f"<p class='lead'>{html.escape(model_info.label)}, predicted now on validation cases "
        f"({'x'.join(map(str, model_info.shape))}). Cases are named by salted key only.</p>"
    )
    return Gallery(intro + body, count)


def _choose_model(run: Any) -> _Model | None:
    rd = run.rd
    rb = run.retrained_best
    if rb is not None:
        rec = run.retrain[rb]
        d = rd.retrain_dir(rb)
        if (d / "model.pt").exists() and (d / "spec.json").exists() and rec.get("shape"):
            patch = (rec.get("patch") or {}).get("size") if isinstance(rec.get("patch"), dict) else None
            op = rec.get("operating_point") or {}
            return _Model(
                f"Retrained trial {rb} (full fidelity)",
                d / "model.pt",
                d / "spec.json",
                tuple(rec["shape"]),
                tuple(rec.get("divisor") or [1]),
                tuple(patch) if patch else None,
                op.get("threshold"),
            )
    proxy_shape = (run.summary.get("proxy") or {}).get("shape")
    if not proxy_shape:
        return None
    order = []
    if run.best_trial is not None:
        order.append(run.best_trial)
    sign = 1.0 if run.directions[0] == "maximize" else -1.0
    ranked = sorted(
        (n for n, r in run.trials.items() if r.complete and r.values),
        key=lambda n: -sign * float(run.trials[n].values[0]),
    )
    order += [n for n in ranked if n not in order]
    for n in order:
        d = rd.trial_dir(n)
        if (d / "model.pt").exists() and (d / "spec.json").exists():
            rec = run.trials.get(n) or TrialRecord(trial=n)
            op = rec.operating_point or {}
            best = " (the best)" if n == run.best_trial else ""
            # A ladder trial's weights were last trained at its record's shape (the full one at the top rung).
            shape = getattr(rec, "shape", None) if getattr(rec, "fidelity", None) == "ladder" else None
            full = shape is not None and list(shape) == list(
                run.summary.get("proxy", {}).get("full_shape") or []
            )
            return _Model(
                f"{'Ladder' if shape else 'Proxy'} trial {n}{best}"
                + (", trained at full resolution" if full else "")
                + ", not retrained",
                d / "model.pt",
                d / "spec.json",
                tuple(shape or proxy_shape),
                tuple(rec.divisor or [1]),
                None,
                op.get("threshold"),
            )
    return None


def _load_validation(run: Any, model: _Model) -> tuple[Any, Any] | str:
    """Return ``(task, ArrayData)`` of the first validation cases at the model's shape, or why not."""
    rd = run.rd
    if not rd.resolved_path.exists() or not rd.salt.exists():
        return f"The run's {RESOLVED} or .salt is missing, so its validation cases cannot be found."
    if not rd.fingerprint.exists() or not rd.splits.exists():
        return "The run's fingerprint.json or splits.json is missing."
    from mednas.data import load_arrays, load_dataset, plan_data
    from mednas.errors import MednasError

    try:
        task = rd.task()
        salt = rd.salt.read_text().strip()
        # plan_data rewrites the fingerprint when the data changed: check first, so the report never writes records.
        keys = {c.key for c in load_dataset(task, salt, run_dir=rd.root).cases}
        if keys != {c.get("case") for c in run.fingerprint.get("cases") or []}:
            return (
                "The cases found now do not match the run's fingerprint.json (the data moved or changed; demo data "
                "live in the run's cache/, data.cache_dir or $MEDNAS_CACHE_DIR, which may point elsewhere than during the "
                "search): no pictures."
            )
        plan = plan_data(task, rd, salt=salt)
        cap = _MAX_CLASSIFICATION if task.problem == "classification" else _MAX_SEGMENTATION
        cases = plan.cases("val")[:cap]
        if not cases:
            return "The validation split is empty."
        data = load_arrays(cases, model.shape, plan.prep, plan.cache_dir)
    except (MednasError, OSError) as exc:
        return f"The validation data could not be loaded ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})."
    return task, data


def _predict(task: Any, model: _Model, data: Any) -> np.ndarray:
    import torch

    from mednas.errors import RunDirError
    from mednas.io import read_json
    from mednas.spec import build, load_spec
    from mednas.train import predict

    net = build(load_spec(read_json(model.spec), model.spec, error=RunDirError))
    try:
        state = torch.load(model.weights, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a pickle with code in it is refused by weights_only, never run
        raise RunDirError(
            f"{model.weights}: not a plain state dict of tensors (torch.load with weights_only=True "
            "refused it)"
        ) from None
    net.load_state_dict(state)
    return predict(
        net,
        data.images,
        problem=task.problem,
        batch_size=max(1, min(16, task.training.batch_size)),
        device="cpu",
        divisor=model.divisor,
        patch=model.patch,
    )


def _img(rgb: np.ndarray, caption: str) -> str:
    from mednas.reporting._images import png_data_uri

    return (
        f"<figure><img alt='{html.escape(caption)}' src='{png_data_uri(rgb)}'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _plane(image: np.ndarray) -> np.ndarray:
    """Turn a 2D array ``(X, Y)`` for display as the source picture was: first axis across, second down."""
    return np.asarray(image).T


def _classification(task: Any, data: Any, outputs: np.ndarray, model: _Model, n: int) -> tuple[str, int]:
    from mednas.metrics import finding_score
    from mednas.reporting._images import grey_rgb, slices_2d

    findings = task.labels.finding_indices
    truth = np.isin(data.labels, findings)
    score = finding_score(outputs, positive=findings)
    thr = model.threshold if model.threshold is not None and np.isfinite(model.threshold) else 0.5
    call = score >= thr
    groups = {
        "true positive": sorted(np.flatnonzero(truth & call), key=lambda i: -score[i]),
        "false negative": sorted(np.flatnonzero(truth & ~call), key=lambda i: score[i]),
        "false positive": sorted(np.flatnonzero(~truth & call), key=lambda i: -score[i]),
        "true negative": sorted(np.flatnonzero(~truth & ~call), key=lambda i: score[i]),
    }
    chosen: list[tuple[int, str]] = []
    while len(chosen) < n and any(groups.values()):
        for kind, idx in groups.items():
            if idx and len(chosen) < n:
                chosen.append((int(idx.pop(0)), kind))
    names = task.labels.names
    cells = []
    for i, kind in chosen:
        label = names[int(data.labels[i])] if 0 <= int(data.labels[i]) < len(names) else str(data.labels[i])
        caption = f"{data.keys[i]} · truly {label} · score {score[i]:.3f} → {'finding' if call[i] else 'no finding'} ({kind})"
        image = data.images[i, 0]
        picture = grey_rgb(_plane(image) if image.ndim == 2 else slices_2d(image)["axial"])
        cells.append(f"<div class='case'>{_img(picture, caption)}</div>")
    text = (
        f"<p>Threshold {thr:.4f} (the operating point chosen on validation). Shown: the most confident true "
        "positives, the worst misses (false negatives), the most confident false alarms and true negatives, in turn.</p>"
    )
    return text + "<div class='gallery'>" + "".join(cells) + "</div>", len(cells)


def _segmentation(task: Any, data: Any, outputs: np.ndarray, n: int) -> tuple[str, int]:
    from mednas.reporting._images import GT_COLOUR, PRED_COLOUR

    findings = task.labels.finding_indices
    stats = _lesion_stats(task, data, outputs, findings)
    picks = _pick_cases(stats, n)
    legend = (
        f"<p><span class='legend-swatch' style='background:rgb{GT_COLOUR}'></span>ground truth"
        f"<span class='legend-swatch' style='background:rgb{PRED_COLOUR}'></span>prediction "
        "(filled, with a solid outline; where they overlap the fills blend)</p>"
    )
    blocks, count = [], 0
    for i, why in picks:
        _, d, n_les, n_det, n_fp = next(s for s in stats if s[0] == i)
        truth = np.isin(data.labels[i], findings)
        pred = np.isin(outputs[i], findings)
        caption = (
            f"{data.keys[i]}{' · ' + why if why else ''} · Dice {d:.3f} · lesions {n_les}, detected {n_det}, "
            f"false positives {n_fp}"
        )
        panels, where = _case_panels(data.images[i, 0], truth, pred)
        count += len(panels)
        blocks.append(
            f"<div class='case wide'><div class='caption'>{html.escape(caption)}"
            f"{' (' + where + ')' if where else ''}</div><div class='row'>{''.join(panels)}</div></div>"
        )
    return legend + "<div class='gallery'>" + "".join(blocks) + "</div>", count


def _lesion_stats(
    task: Any, data: Any, outputs: np.ndarray, findings: Any
) -> list[tuple[int, float, int, int, int]]:
    """Per case: index, Dice, lesions, detected lesions and false-positive lesions (the task's detection rule)."""
    from mednas.metrics import dice, lesion_analysis
    from mednas.metrics._objective import _lesion_overlap

    overlap = _lesion_overlap(task)  # the task's detection rule, as the search scored lesions
    stats = []
    for i in range(len(data)):
        res = lesion_analysis(outputs[i], data.labels[i], label=findings, overlap=overlap)
        stats.append(
            (
                i,
                float(dice(outputs[i], data.labels[i], label=findings)),
                res.n_lesions,
                res.n_detected,
                res.n_false_positives,
            )
        )
    return stats


def _pick_cases(stats: list[tuple[int, float, int, int, int]], n: int) -> list[tuple[int, str]]:
    """At most ``n`` cases: highest, lowest and median Dice, a missed lesion, a false alarm, then in order."""
    # Rank cases that have lesions (an empty case predicted empty scores Dice 1 and shows nothing).
    order = sorted([s for s in stats if s[2] > 0] or stats, key=lambda s: s[1])
    picks: list[tuple[int, str]] = []
    missed = [s for s in stats if s[3] < s[2]]
    alarms = [s for s in stats if s[2] == 0 and s[4] > 0]
    for s, why in (
        (order[-1], "highest Dice"),
        (order[0], "lowest Dice"),
        (order[len(order) // 2], "median Dice"),
        (missed[0] if missed else None, "a missed lesion"),
        (alarms[0] if alarms else None, "no lesion, a false alarm"),
    ):
        if s is not None and s[0] not in {p for p, _ in picks}:
            picks.append((s[0], why))
    for s in stats:
        if len(picks) >= n:
            break
        if s[0] not in {p for p, _ in picks}:
            picks.append((s[0], ""))
    return picks[:n]


def _case_panels(image: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> tuple[list[str], str]:
    """The pictures of one case (3D: three axial panels and two planes with both; 2D: four) and where they cut."""
    from scipy import ndimage

    from mednas.reporting._images import grey_rgb, overlay, slices_2d

    if image.ndim != 3:
        g = grey_rgb(_plane(image))
        return [
            _img(g, "image"),
            _img(overlay(g, truth=_plane(truth)), "ground truth"),
            _img(overlay(g, prediction=_plane(pred)), "prediction"),
            _img(overlay(g, truth=_plane(truth), prediction=_plane(pred)), "both"),
        ], ""
    centre = _centre(truth if truth.any() else pred, ndimage)
    views = {k: slices_2d(v, centre) for k, v in (("image", image), ("truth", truth), ("pred", pred))}
    ax = views["image"]["axial"]
    panels = [
        _img(grey_rgb(ax), "axial: image"),
        _img(overlay(grey_rgb(ax), truth=views["truth"]["axial"]), "axial: ground truth"),
        _img(overlay(grey_rgb(ax), prediction=views["pred"]["axial"]), "axial: prediction"),
    ]
    for plane in ("coronal", "sagittal"):
        pic = overlay(
            grey_rgb(views["image"][plane]),
            truth=views["truth"][plane],
            prediction=views["pred"][plane],
        )
        panels.append(_img(pic, f"{plane}: both"))
    where = "slices through the largest lesion" if truth.any() or pred.any() else "middle slices"
    return panels, where


def _centre(mask: np.ndarray, ndimage: Any) -> tuple[int, ...] | None:
    """Centre of mass of the largest connected component of ``mask`` (None: empty mask)."""
    if not mask.any():
        return None
    labels, n = ndimage.label(mask)
    sizes = ndimage.sum(mask, labels, index=range(1, n + 1))
    largest = int(np.argmax(sizes)) + 1
    com = ndimage.center_of_mass(labels == largest)
    return tuple(int(round(c)) for c in com)
