"""``mednas evaluate``: run a frozen bundle on labelled data it never saw and say how its promises hold.

The bundle is loaded by :func:`mednas.bundle.load_bundle` (checksums, pinned digest, signature, allowed network
class, ``weights_only``), so evaluation sees exactly what ``mednas predict`` sees. Nothing of the run directory
is read. Writes ``validation.json`` and one self-contained ``validation.html``.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mednas.errors import DataError, MednasError

logger = logging.getLogger(__name__)

__all__ = ["EvaluationResult", "evaluate_bundle"]

FORMAT_VERSION = 1


@dataclass
class EvaluationResult:
    """What :func:`evaluate_bundle` returns.

    Attributes:
        path: ``validation.json``.
        html: ``validation.html``.
        record: The contents of ``validation.json``.
        failures: ``(case as given, reason)`` of every case without an answer (also in ``failed.csv``).
        seconds: Wall time.
    """

    path: Path
    html: Path
    record: dict[str, Any]
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def promise(self) -> dict[str, Any] | None:
        """The operating point's promise check (classification), or ``None``."""
        return self.record.get("operating_point")


def evaluate_bundle(
    bundle: str | os.PathLike[str],
    data: str | os.PathLike[str] | None = None,
    *,
    out: str | os.PathLike[str],
    data_file: str | os.PathLike[str] | None = None,
    split: str | None = None,
    expect_digest: str | None = None,
    verify_key: str | os.PathLike[str] | None = None,
    backend: str = "torch",
    device: str = "cpu",
    n_resamples: int = 1000,
    seed: int = 0,
) -> EvaluationResult:
    """Evaluate a bundle on labelled data: metrics with patient-level 95% intervals, the promise, overlap.

    Args:
        bundle: A folder written by ``mednas export``.
        data: A task-like YAML with a ``data:`` section; or (by its suffix) a data file as for ``data_file``.
        out: Output folder for ``validation.json``, ``validation.html`` (and ``failed.csv`` when cases failed).
        data_file: Shorthand for a data file: ``.npz`` (MedMNIST), ``.json`` datalist, ``.csv`` sheet, or a folder.
        split: Keep only cases of this given split (MedMNIST arrays, a ``split`` column or field).
        expect_digest: The bundle digest ``mednas export`` printed; any other bundle is refused before loading.
        verify_key: Key file the bundle was signed with.
        backend: ``torch``, ``torchscript``, ``onnx`` or ``onnx-int8``.
        device: Torch device.
        n_resamples: Bootstrap resamples (over patients).
        seed: Bootstrap seed.

    Returns:
        An :class:`EvaluationResult`.

    Raises:
        BundleError: Checksums, digest or signature do not hold (nothing is evaluated).
        ConfigError, DataError: Bad DATA (one line naming the file), a split that selects nothing, or no case
            that could be evaluated.

    Example:
        >>> result = evaluate_bundle("runs/x/bundle", "external.yaml", out="validation/")  # doctest: +SKIP
        >>> result.record["operating_point"]["status"]  # doctest: +SKIP
        'failed'
    """
    from mednas.bundle import load_bundle
    from mednas.evaluation._data import read_eval_data

    t0 = time.perf_counter()
    if n_resamples < 50:
        raise MednasError(f"n_resamples must be at least 50, got {n_resamples}")
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise MednasError(f"{out_dir}: exists and is not a folder")
    if data is not None and data_file is None and Path(data).suffix.lower() not in (".yaml", ".yml"):
        data, data_file = None, data
    model = load_bundle(
        bundle, backend=backend, device=device, expect_digest=expect_digest, verify_key=verify_key
    )
    ev = read_eval_data(model.info, data=data, data_file=data_file, split=split)
    logger.info("evaluating %s on %d cases of %s", Path(bundle).name, len(ev.cases), ev.name)
    outputs = _predict_checked(model, ev)
    record, curves = _record(model, ev, outputs, Path(bundle), expect_digest, verify_key, n_resamples, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    record["seconds"] = round(time.perf_counter() - t0, 2)
    from mednas.evaluation._html import render_html
    from mednas.io import write_json, write_text

    _write_failures(out_dir / "failed.csv", outputs["failures"])
    json_path = write_json(out_dir / "validation.json", record)
    html_path = write_text(out_dir / "validation.html", render_html(record, curves))
    seconds = time.perf_counter() - t0
    logger.info("evaluation written to %s in %.1fs", out_dir, seconds)
    return EvaluationResult(json_path, html_path, record, outputs["failures"], seconds)


def _predict_checked(model: Any, ev: Any) -> dict[str, Any]:
    """Predict every case (see :func:`_predict_all`); say how many got no answer.

    Raises:
        DataError: When no case could be evaluated (naming the first failure).
    """
    outputs = _predict_all(model, ev)
    if outputs["failures"]:
        logger.warning(
            "%d of %d cases got no answer (NaN/infinite output or unreadable); left out of every metric",
            len(outputs["failures"]),
            len(ev.cases),
        )
    if not outputs["done"]:
        first = outputs["failures"][0][1] if outputs["failures"] else "no case"
        raise DataError(
            f"{ev.source}: no case could be evaluated ({len(outputs['failures'])} failed; first: {first})"
        )
    return outputs


def _write_failures(path: Path, failures: list[tuple[str, str]]) -> None:
    """Write ``failed.csv`` (case, reason) when cases failed; remove a stale one when none did."""
    from mednas.io import write_text

    if failures:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["case", "reason"])
        writer.writerows(failures)
        write_text(path, buf.getvalue())
    else:
        path.unlink(missing_ok=True)


# -------------------------------------------------------------------------------------------- predicting


def _read_case(case: Any) -> tuple[Any, list[np.ndarray]]:
    """The case's image as one :class:`~mednas.io.MedImage` (channels concatenated) and its channel arrays."""
    from mednas.io import MedImage, read_image

    channels = [read_image(p) for p in case.images]
    arrays = [c.array for c in channels]
    if len(channels) == 1:
        return channels[0], arrays
    if len({a.shape[1:] for a in arrays}) != 1:
        raise DataError(f"{case.images[0]}: channel images have different shapes")
    return MedImage(np.concatenate(arrays, axis=0), channels[0].affine, dict(channels[0].meta)), arrays


def _predict_all(model: Any, ev: Any) -> dict[str, Any]:
    """Predict every case; a NaN/infinite output or an unreadable image fails that case, never the evaluation."""
    from mednas.bundle import PredictionError
    from mednas.bundle._hashes import image_content_hash
    from mednas.io import read_image

    p = model.pipeline
    findings = list(p.finding_indices)
    done: list[int] = []
    failures: list[tuple[str, str]] = []
    kinds: list[str] = []
    y, scores, preds, rows, hashes = [], [], [], [], []
    overlap = _lesion_overlap(model.info)
    for i, case in enumerate(ev.cases):
        where = case.images[0]
        try:
            image, arrays = _read_case(case)
            digest = image_content_hash(arrays)
            pred = model.predict_one(image, name=where)
            if p.problem == "classification":
                label = list(p.class_names).index(pred.label)
                y.append(int(case.label))
                scores.append(float(pred.finding_score))
                preds.append(label)
            else:
                from mednas.evaluation._metrics import segmentation_case_rows

                gt = read_image(case.label).array
                mask = pred.mask.array
                if gt.shape[1:] != mask.shape[1:]:
                    raise DataError(
                        f"{case.label}: label shape {list(gt.shape[1:])} differs from its image's {list(mask.shape[1:])}"
                    )
                rows.append(
                    segmentation_case_rows(
                        mask[0].astype(np.int64),
                        np.rint(gt[0]).astype(np.int64),
                        findings=findings,
                        n_classes=len(p.class_names),
                        overlap=overlap,
                    )
                )
        except (PredictionError, DataError) as exc:
            failures.append((where, str(exc)))
            kinds.append(
                "non-finite model output"
                if isinstance(exc, PredictionError)
                else "label does not match the image"
                if "label shape" in str(exc)
                else "image could not be read or used"
            )
            logger.debug("case failed: %s", exc)
            continue
        hashes.append(digest)
        done.append(i)
    return {
        "done": done,
        "failures": failures,
        "kinds": kinds,
        "y": np.asarray(y, dtype=int),
        "score": np.asarray(scores, dtype=float),
        "pred": np.asarray(preds, dtype=int),
        "rows": np.asarray(rows, dtype=float),
        "hashes": hashes,
    }


def _lesion_overlap(info: dict[str, Any]) -> str:
    for term in (info.get("task") or {}).get("objective_terms") or []:
        if isinstance(term, dict) and term.get("metric") == "lesion_sensitivity":
            return str(term.get("overlap", "any"))
    return "any"


# ------------------------------------------------------------------------------------------------ record


def _population(ev: Any, n_cases: int, n_patients: int) -> str:
    split = f", split {ev.split}" if ev.split else ", no split filter"
    return f"{ev.name}{split}: {n_cases} cases, {n_patients} patients"


def _record(
    model: Any,
    ev: Any,
    outputs: dict[str, Any],
    bundle: Path,
    expect_digest: str | None,
    verify_key: Any,
    n_resamples: int,
    seed: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Build ``validation.json`` from the evaluated cases, and the per-case arrays the page's curves need."""
    from mednas.evaluation import _metrics as M

    cases = [ev.cases[i] for i in outputs["done"]]
    # The bootstrap groups by patient; the salt-independent order key (memory only, never written) keeps the
    # resamples, and so the intervals, the same from one evaluation of the same data to the next.
    patients = [c.order or c.patient for c in cases]
    attributes = [ev.attributes[i] for i in outputs["done"]]
    record: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "population": _population(ev, len(cases), len(set(patients))),
        "bundle": _bundle_brief(model, bundle, expect_digest, verify_key),
        "data": _data_brief(ev, outputs, len(cases), len(set(patients))),
        "failed": {
            "n": len(outputs["failures"]),
            "reasons": dict(Counter(outputs["kinds"])),
            "file": "failed.csv" if outputs["failures"] else None,
            "note": "failed cases got no label and are left out of every metric",
        },
        "bootstrap": {"unit": "patient", "n_resamples": n_resamples, "confidence": 0.95, "seed": seed},
    }
    curves: dict[str, Any] = {"patients": patients}
    score = _classification_scores if model.pipeline.problem == "classification" else _segmentation_scores
    sub = score(model, outputs, patients, attributes, record, curves, n_resamples, seed)
    record["subgroups"] = {
        "attributes": sorted({k for a in attributes for k in a}),
        "rows": sub,
        "min_group": M.MIN_GROUP,
    }
    record["overlap"] = _overlap(bundle, outputs["hashes"])
    return record, curves


def _bundle_brief(model: Any, bundle: Path, expect_digest: str | None, verify_key: Any) -> dict[str, Any]:
    """The record's ``bundle`` section: which model was evaluated, how it was checked, with which backend."""
    info = model.info
    p = model.pipeline
    names = list(p.class_names)
    return {
        "name": bundle.resolve().name,
        "digest": model.digest,
        "digest_pinned": expect_digest is not None,
        "signature_verified": verify_key is not None,
        "source": info.get("source"),
        "source_label": info.get("source_label"),
        "trial": info.get("trial"),
        "task": (info.get("task") or {}).get("name"),
        "problem": p.problem,
        "classes": names,
        "findings": [names[i] for i in p.finding_indices],
        "architecture": (info.get("spec") or {}).get("target"),
        "params": info.get("params"),
        "backend": model.backend,
    }


def _data_brief(ev: Any, outputs: dict[str, Any], n_cases: int, n_patients: int) -> dict[str, Any]:
    """The record's ``data`` section: the data's layout and how many cases were listed, selected and evaluated."""
    return {
        "name": ev.name,
        "layout": ev.layout,
        "split": ev.split,
        "splits_present": ev.splits_present,
        "n_listed": ev.n_listed,
        "n_selected": len(ev.cases),
        "n_cases": n_cases,
        "n_patients": n_patients,
        "n_failed": len(outputs["failures"]),
    }


def _classification_scores(
    model: Any,
    outputs: dict[str, Any],
    patients: list[Any],
    attributes: list[dict[str, Any]],
    record: dict[str, Any],
    curves: dict[str, Any],
    n_resamples: int,
    seed: int,
) -> list[dict[str, Any]]:
    """Add the classification metrics and the operating point's promise check to ``record`` and the finding
    scores to ``curves``; return the subgroup table."""
    from mednas.evaluation import _metrics as M

    info = model.info
    p = model.pipeline
    names = list(p.class_names)
    findings = list(p.finding_indices)
    y, score, pred = outputs["y"], outputs["score"], outputs["pred"]
    record["data"]["class_counts"] = {n: int(np.sum(y == i)) for i, n in enumerate(names)}
    res = M.classification_results(
        y, score, pred, patients, class_names=names, findings=findings, n_resamples=n_resamples, seed=seed
    )
    truth = np.isin(y, findings).astype(int)
    op = dict(info.get("operating_point") or {})
    op.setdefault("threshold", p.threshold)
    record.update(
        metrics=res["metrics"],
        per_class=res["per_class"],
        confusion=res["confusion"],
        finding_confusion=res["finding_confusion"],
        calibration=res["calibration"],
        prevalence=res["prevalence"],
        operating_point=M.promise_check(op.get("rule"), op, res["metrics"], truth, score),
    )
    curves.update(finding=truth.tolist(), score=score.tolist())
    return M.subgroup_table(
        attributes,
        [y, score, pred],
        patients,
        fn=M.classification_subgroup_fn(len(names), findings),
        n_resamples=n_resamples,
        seed=seed,
        count=lambda idx: {"n_finding": int(np.isin(y[idx], findings).sum())},
    )


def _segmentation_scores(
    model: Any,
    outputs: dict[str, Any],
    patients: list[Any],
    attributes: list[dict[str, Any]],
    record: dict[str, Any],
    curves: dict[str, Any],
    n_resamples: int,
    seed: int,
) -> list[dict[str, Any]]:
    """Add the segmentation metrics (Dice per class, lesion detection) to ``record`` and the per-case Dice to
    ``curves``; return the subgroup table."""
    from mednas.evaluation import _metrics as M

    names = list(model.pipeline.class_names)
    rows = outputs["rows"]
    res = M.segmentation_results(rows, patients, class_names=names, n_resamples=n_resamples, seed=seed)
    record.update(
        metrics=res["metrics"],
        per_class=res["per_class"],
        lesions=res["lesions"],
        lesion_overlap_rule=_lesion_overlap(model.info),
    )
    curves.update(dice=res["per_case_dice"])
    return M.subgroup_table(
        attributes, [rows], patients, fn=M.segmentation_subgroup_fn(), n_resamples=n_resamples, seed=seed
    )


def _overlap(bundle: Path, hashes: list[str]) -> dict[str, Any]:
    from mednas.bundle._hashes import HASH_METHOD, read_data_hashes

    own = Counter(hashes)
    base: dict[str, Any] = {
        "n_hashed": len(hashes),
        "method": HASH_METHOD,
        "duplicates_within": int(sum(n - 1 for n in own.values())),
    }
    recorded = read_data_hashes(bundle)
    if recorded is None:
        return {
            **base,
            "recorded": False,
            "seen_in_training": None,
            "seen_in_validation": None,
            "text": "not recorded: this bundle holds no content hashes of its training data "
            "(exported before mednas recorded them, or its images could not be read at export)",
        }
    if recorded.get("method") != HASH_METHOD:
        return {
            **base,
            "recorded": False,
            "seen_in_training": None,
            "seen_in_validation": None,
            "text": f"not comparable: the bundle's hashes were made another way ({recorded.get('method')})",
        }
    train, val = set(recorded.get("train") or []), set(recorded.get("val") or [])
    in_train = sum(1 for h in hashes if h in train)
    in_val = sum(1 for h in hashes if h in val)
    text = f"{in_train} of {len(hashes)} evaluation images were seen in training, {in_val} in validation" + (
        "" if in_train or in_val else ": none overlap"
    )
    return {
        **base,
        "recorded": True,
        "seen_in_training": in_train,
        "seen_in_validation": in_val,
        "training_images": len(train),
        "validation_images": len(val),
        "text": text,
    }
