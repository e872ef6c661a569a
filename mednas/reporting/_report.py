"""Write ``report.html``: one self-contained page that shows how a search went and what its best model does.

Everything comes from the run directory (``summary.json``, ``trials/<n>/``, ``retrain/<n>/``, ``env.json``,
``fingerprint.json``, ``splits.json``, ``resolved.yaml``), its records read through :class:`mednas.rundir.RunDir`
(each trial as its :class:`mednas.rundir.TrialRecord`); the study storage is read only for parameter
importances, and the kept weights plus the cached validation arrays only for the case pictures. A part whose
inputs are missing (not retrained yet, no kept weights, an older run) becomes a panel that says so and how
to get it; a part that fails to draw is reported in :attr:`ReportResult.errors` and the rest still renders.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mednas.errors import RunDirError
from mednas.io._atomic import write_text
from mednas.rundir import RESOLVED, RunDir, TrialRecord

logger = logging.getLogger(__name__)

__all__ = ["ReportResult", "write_report"]

_MIN_IMPORTANCE_TRIALS = 5
#: How the report names a ladder trial's figures when it completed the top (full-resolution) rung.
_TOP_RUNG = "top rung, full resolution"


@dataclass
class ReportResult:
    """What :func:`write_report` wrote.

    Attributes:
        path: The HTML file.
        figures: Identifiers of the plots in it (each a plotly figure with data).
        images: Number of case pictures embedded.
        notes: Parts left out and why (e.g. "not retrained yet").
        errors: Parts that failed to draw (empty for a healthy run).
        seconds: Time taken.
        size_bytes: Size of the file (plus ``plotly.min.js`` when written beside it).
    """

    path: Path
    figures: list[str] = field(default_factory=list)
    images: int = 0
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    size_bytes: int = 0


def write_report(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    images: bool = True,
    n_cases: int | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    plotlyjs: str = "inline",
) -> ReportResult:
    """Write the run's HTML report.

    Args:
        run_dir: Run directory of a search (retrain and export records are used when present).
        out: Output file (default ``RUN_DIR/report.html``).
        images: Embed pictures of validation cases with ground truth and prediction (loads the kept weights
            and the cached validation arrays; ``False`` skips both).
        n_cases: Number of case pictures (default 8 for 2D, 4 for 3D).
        storage: Optuna storage URL the search used (default: ``study.db`` in the run directory), read for
            parameter importances.
        study_name: Study name (default: the one ``summary.json`` records).
        plotlyjs: ``inline`` (one self-contained file, about 5 MB) or ``beside`` (``plotly.min.js`` written next
            to the report; the report stays offline-capable as long as the two files travel together).

    Returns:
        A :class:`ReportResult`.

    Raises:
        RunDirError: If ``run_dir`` has no ``summary.json`` (no search has started there).

    Example:
        >>> result = write_report("runs/demo-xray-nodule")  # doctest: +SKIP
        >>> result.figures  # doctest: +SKIP
        ['history', 'importance', 'roc', 'pr', 'calibration', 'confusion-0']
    """
    t0 = time.perf_counter()
    if plotlyjs not in ("inline", "beside"):
        raise ValueError(f"plotlyjs must be 'inline' or 'beside', got {plotlyjs!r}")
    rd = RunDir(run_dir)
    rd.require(rd.summary_path, step="the report")
    target = Path(out) if out is not None else rd.report
    run = _Run.load(rd, storage=storage, study_name=study_name)
    page = _Page(run)
    _add_sections(page, images=images, n_cases=n_cases)
    size = _write_page(page, plotlyjs, target)
    result = ReportResult(
        target,
        list(page.figure_ids),
        page.n_images,
        list(page.notes),
        list(page.errors),
        time.perf_counter() - t0,
        size,
    )
    logger.info(
        "report: %s (%d plots, %d case pictures, %.1f MB) in %.1fs",
        target,
        len(result.figures),
        result.images,
        size / 2**20,
        result.seconds,
        extra={"figures": len(result.figures), "images": result.images, "bytes": size},
    )
    for err in result.errors:
        logger.warning("report: %s", err)
    return result


def _add_sections(page: _Page, *, images: bool, n_cases: int | None) -> None:
    """Build the report's sections in reading order (a section that fails becomes a note, not a crash)."""
    page.section("overview", "Overview", page.overview)
    page.section("search", "Search", page.search)
    page.section("fidelity", "Proxy fidelity", page.fidelity)
    page.section("performance", "Clinical performance", page.performance)
    if images:
        page.section("cases", "Cases", lambda: page.cases(n_cases))
    else:
        page.notes.append("case pictures left out (--no-images)")
    page.section("trials", "Trials", page.trials)
    page.section("data", "Data", page.data)
    page.section("settings", "Task settings", page.settings)
    page.section("environment", "Environment", page.environment)
    page.section("dashboard", "Explore further", page.dashboard)


def _write_page(page: _Page, plotlyjs: str, target: Path) -> int:
    """Write the page (and ``plotly.min.js`` beside it for ``beside``); return the bytes written."""
    text, extra_files = page.render(plotlyjs, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text(target, text)
    size = target.stat().st_size
    for name, content in extra_files.items():
        path = target.parent / name
        if not path.exists() or path.stat().st_size != len(content.encode()):
            write_text(path, content)
        size += path.stat().st_size
    return size


# ------------------------------------------------------------------------------------------ the run's records


@dataclass
class _Run:
    """A run directory's records, read once through :class:`RunDir` (``resolved`` is the raw mapping, shown as
    written; ``trials`` are the typed trial records; ``retrain`` the retrained candidates' records)."""

    rd: RunDir
    summary: dict[str, Any]
    resolved: dict[str, Any]
    env: dict[str, Any]
    fingerprint: dict[str, Any]
    splits: dict[str, Any]
    trials: dict[int, TrialRecord]
    retrain: dict[int, dict[str, Any]]
    storage: str | None
    study_name: str | None

    @classmethod
    def load(cls, rd: RunDir, *, storage: str | None, study_name: str | None) -> _Run:
        summary = rd.summary()
        resolved = rd.resolved()
        _check_specs(rd)
        return cls(
            rd=rd,
            summary=summary,
            resolved=resolved,
            env=_read_optional(rd, rd.env),
            fingerprint=_read_optional(rd, rd.fingerprint),
            splits=_read_optional(rd, rd.splits),
            trials=rd.trials(),
            retrain={n: rec for n, rec in rd.retrains().items() if rec},
            storage=storage or (rd.default_storage() if rd.study_db.exists() else None),
            study_name=study_name or (summary.get("study") or {}).get("name") or resolved.get("name"),
        )

    @property
    def names(self) -> list[str]:
        return list((self.summary.get("objective") or {}).get("names") or ["objective"])

    @property
    def directions(self) -> list[str]:
        return list((self.summary.get("objective") or {}).get("directions") or ["maximize"])

    @property
    def labels(self) -> list[str]:
        """Objective names for axes and columns: ``latency_ms`` names the runtime, precision, threads and hardware
        its figures were taken on, e.g. ``latency_ms (onnxruntime fp32, 1 thread, AMD EPYC)``."""
        from mednas.reporting._status import latency_setting

        setting = latency_setting(self.summary.get("latency"))
        return [f"{n} ({setting})" if n == "latency_ms" and setting else n for n in self.names]

    @property
    def problem(self) -> str:
        return str(self.summary.get("problem") or self.resolved.get("problem") or "classification")

    @property
    def show_file_names(self) -> bool:
        return bool((self.resolved.get("privacy") or {}).get("show_file_names"))

    @property
    def best_trial(self) -> int | None:
        best = self.summary.get("best")
        return int(best["trial"]) if best else None

    @property
    def retrained_best(self) -> int | None:
        r = self.summary.get("retrain") or {}
        best = r.get("best")
        if best is not None and best in self.retrain and self.retrain[best].get("state") == "complete":
            return int(best)
        done = [n for n, rec in self.retrain.items() if rec.get("state") == "complete"]
        if not done:
            return None
        sign = 1.0 if self.directions[0] == "maximize" else -1.0
        return max(
            done, key=lambda n: sign * float((self.retrain[n].get("val") or {}).get("objective") or -math.inf)
        )

    def predictions(self, folder: Path) -> dict[str, dict[str, Any]]:
        """Prediction records of a trial or retrain folder by split (``predictions.json``, ``predictions_<split>.json``)."""
        out: dict[str, dict[str, Any]] = {}
        for path in sorted(folder.glob("predictions*.json")):
            rec = _read_optional(self.rd, path)
            if not rec:
                continue
            if "split" in rec:
                out[str(rec["split"])] = rec
            else:  # {"val": {...}, "test": {...}}
                out.update(
                    {
                        k: v
                        for k, v in rec.items()
                        if isinstance(v, dict) and ("scores" in v or "per_case" in v)
                    }
                )
        return out


def _check_specs(rd: RunDir) -> None:
    """Refuse the report when any recorded spec names something other than an allowed network class.

    Checked as strings (nothing is imported), before any part is drawn, with or without case pictures: an edited
    ``spec.json`` is a hostile run directory, not a part that failed to draw.
    """
    from mednas.spec import ArchSpec, SpecError

    for folder in (rd.root / "trials", rd.root / "retrain"):
        for path in sorted(folder.rglob("spec.json")) if folder.is_dir() else []:
            try:
                ArchSpec.from_dict(rd.read_json(path))
            except SpecError as exc:
                raise RunDirError(f"{path}: {exc}") from None


def _read_optional(rd: RunDir, path: Path) -> dict[str, Any]:
    try:
        return rd.read_json(path) if path.exists() else {}
    except RunDirError:
        return {}


# ------------------------------------------------------------------------------------------ the page


class _Page:
    """Collects sections, plots and pictures, then renders the page."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.sections: list[tuple[str, str, str]] = []
        self.figure_ids: list[str] = []
        self.notes: list[str] = []
        self.errors: list[str] = []
        self.n_images = 0

    # -- helpers

    def section(self, sid: str, title: str, build: Callable[[], str]) -> None:
        try:
            body = build()
        except Exception as exc:  # noqa: BLE001 - one broken part must not cost the whole report
            logger.debug("report section %s failed:\n%s", sid, traceback.format_exc())
            self.errors.append(f"section {title!r} could not be drawn: {type(exc).__name__}: {exc}")
            body = _panel(f"This part could not be drawn: {type(exc).__name__}: {exc}", error=True)
        self.sections.append((sid, title, body))

    def figure(self, fid: str, fig: Any, caption: str) -> str:
        div = fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=f"fig-{fid}",
            config={
                "displaylogo": False,
                "responsive": True,
                "toImageButtonOptions": {"format": "svg", "filename": f"mednas-{fid}"},
            },
        )
        self.figure_ids.append(fid)
        return (
            f'<figure class="mednas-figure" data-figure="{_e(fid)}">{div}'
            f"<figcaption>{caption}</figcaption></figure>"
        )

    def note(self, text: str) -> str:
        self.notes.append(html.unescape(_strip_tags(text)))
        return _panel(text)

    # -- sections

    def overview(self) -> str:
        run, s = self.run, self.run.summary
        best = s.get("best")
        rb = run.retrained_best
        fid = s.get("proxy_fidelity") or {}
        out = self._overview_head()
        out.append(
            "<div class='cards'>"
            + "".join(
                f"<div class='card'><div class='k'>{_e(k)}</div><div class='v'>{v}</div><div class='s'>{sub}</div></div>"
                for k, v, sub in self._overview_cards()
            )
            + "</div>"
        )
        if best and rb is None and self._best_stage == _TOP_RUNG:
            out.append(
                "<div class='note'>The best candidate so far climbed the resolution ladder to full resolution: one "
                "seed, no test-split evaluation. Retrain the leading candidates (<code>mednas retrain "
                "RUN_DIR</code>) for seeds and the held-out test before reading its figures as a model's "
                "performance.</div>"
            )
        elif best and rb is None:
            out.append(
                "<div class='note'>The best candidate so far was trained only on the proxy (low resolution, few "
                "epochs). Retrain the leading candidates at full fidelity (<code>mednas retrain RUN_DIR</code>) "
                "before reading its figures as a model's performance.</div>"
            )
        if fid.get("warning"):
            out.append(f"<div class='note'>{_e(fid['warning'])}</div>")
        if best:
            out += _best_proxy_html(best, self._best_stage)
        else:
            out.append(self.note("No trial has completed yet: the figures below fill in as the search runs."))
        if rb is not None:
            out += _retrained_html(rb, run.retrain[rb])
        return "\n".join(out)

    def _overview_head(self) -> list[str]:
        """The title, the task line, and the banners for simulated data and augmented copies."""
        run, s = self.run, self.run.summary
        out = [f"<h1>{_e(s.get('task') or 'run')}</h1>"]
        desc = run.resolved.get("description")
        dims = s.get("spatial_dims")
        out.append(
            f"<p class='lead'>{_e(desc) + ' · ' if desc else ''}{_e(run.problem)}"
            f"{f', {dims}D' if dims else ''} · objective {', '.join(_e(n) for n in run.names)}"
            f" ({', '.join(_e(d) for d in run.directions)})</p>"
        )
        if s.get("simulated_data"):
            out.append(
                "<div class='banner' id='simulated-data'><strong>SIMULATED DATA.</strong> The images of this run "
                "were generated (demo data built on real anatomy, or a synthetic dataset); no figure in this "
                "report says anything about clinical performance.</div>"
            )
        aug = (s.get("data") or {}).get("augmentation")
        if aug:
            note = aug.get("note") if isinstance(aug, dict) else None
            out.append(
                f"<div class='banner' id='augmentation'><strong>AUGMENTED COPIES.</strong> "
                f"{_e(note or json.dumps(aug))}</div>"
            )
        return out

    def _overview_cards(self) -> list[tuple[str, str, str]]:
        """The overview's cards as (title, value, detail): trials, best, retrained best, fidelity, export."""
        run, s = self.run, self.run.summary
        n = s.get("n_trials") or {}
        best = s.get("best")
        cards = [
            (
                "trials",
                f"{n.get('complete', 0) + n.get('pruned', 0) + n.get('infeasible', 0)}"
                f"{'/' + str(n['target']) if n.get('target') else ''}",
                f"{n.get('complete', 0)} complete, {n.get('pruned', 0)} pruned, {n.get('infeasible', 0)} infeasible, "
                f"{n.get('failed', 0)} failed" + (f", {n['running']} running" if n.get("running") else ""),
            )
        ]
        if best:
            obj = (best.get("metrics") or {}).get("objective") or {}
            cards.append(
                (
                    f"best ({self._best_stage}): {run.names[0]}",
                    f"{best['values'][0]:.3f}",
                    f"trial {best['trial']}{_ci_span(obj.get('ci95'))}",
                )
            )
            cards.append(
                (
                    "best architecture",
                    _e(str(best.get("family") or "?")),
                    f"{_e(str(best.get('target') or ''))}, {best.get('params') or 0:,} parameters",
                )
            )
        rb = run.retrained_best
        if rb is not None:
            cards += _retrained_cards(rb, run.retrain[rb], s.get("proxy_fidelity") or {})
        else:
            cards.append(("retrained", "not yet", "run `mednas retrain RUN_DIR`"))
        export = s.get("export") or {}
        if export:
            cards.append(
                (
                    "exported bundle",
                    _e(str(export.get("source") or "yes")),
                    f"trial {export.get('trial')}: {_e(str(export.get('path') or 'bundle/'))}",
                )
            )
        return cards

    def search(self) -> str:
        run = self.run
        out = []
        points = self._trial_points()
        if points:
            maximize = run.directions[0] == "maximize"
            out.append(
                self.figure(
                    "history",
                    _figs().history_figure(points, name=run.names[0], maximize=maximize),
                    f"Optimisation history: the validation {_e(run.names[0])} of each trial "
                    + ("at the highest rung it reached " if self._is_ladder else "on the proxy ")
                    + "(error bars: 95% bootstrap interval over patients), pruned trials at their last "
                    "reported value, trials rejected before training (infeasible) and failed ones along the "
                    "bottom, and the best feasible objective so far.",
                )
            )
        else:
            out.append(self.note("No trial has been recorded yet."))
        if self._is_ladder:
            out.extend(self._ladder())
        front = run.summary.get("pareto_front")
        if front is not None and len(run.names) > 1:
            pts = [
                {"trial": p["trial"], "values": p["values"], "ci95": p.get("ci95"), "family": p.get("family")}
                for p in points
                if p["state"] == "complete" and p.get("values") and len(p["values"]) == len(run.names)
            ]
            if pts:
                out.append("<h3>Pareto front</h3>")
                out.append(
                    self.figure(
                        "pareto",
                        _figs().pareto_figure(
                            pts, [f["trial"] for f in front], run.names, run.directions, run.labels
                        ),
                        f"{len(front)} non-dominated trial(s) among {len(pts)} complete ones (feasible, "
                        "started learning); error bars: 95% interval of the primary objective."
                        + self._latency_caption(),
                    )
                )
                rows = [
                    [str(f["trial"]), _e(str(f.get("family") or "")), f"{f.get('params') or 0:,}"]
                    + [f"{v:.4g}" for v in f["values"]]
                    for f in front
                ]
                out.append(_table(["trial", "family", "parameters", *run.labels], rows))
        elif run.summary.get("latency"):
            out.append(self.note(self._latency_caption().strip()))
        out.append("<h3>Parameter importances</h3>")
        out.append(self._importances())
        return "\n".join(out)

    def _latency_caption(self) -> str:
        """A sentence on how candidates were timed (``summary.json`` ``latency``); empty when none were."""
        from mednas.reporting._status import latency_setting

        latency = self.run.summary.get("latency")
        setting = latency_setting(latency)
        if not setting:
            return ""
        figures = latency.get("figures") or {}
        target = f" (deployment target {_e(str(latency['target']))})" if latency.get("target") else ""
        return (
            f" latency_ms: the median of {latency.get('repeats')} timed forward passes of an untrained candidate "
            f"after {latency.get('warmup')} warm-up passes, on {_e(setting)}{target}, "
            f"at the full input shape; {figures.get('measured', 0)} candidate(s) "
            f"timed, {figures.get('cached', 0)} figure(s) reused from the run's cache."
        )

    @property
    def _best_stage(self) -> str:
        """What the best search trial's figures are: ``proxy``, or on the ladder the rung its weights reached."""
        best = self.run.best_trial
        rec = self.run.trials.get(best) if best is not None else None
        reached = getattr(rec, "rung_reached", None)
        if not self._is_ladder or reached is None:
            return "proxy"
        k = int(reached)
        top = len((self.run.summary.get("ladder") or {}).get("rungs") or []) - 1
        return _TOP_RUNG if k >= top else f"ladder rung {k}"

    def _trial_trained_at(self, rec: TrialRecord) -> str:
        """Where a search trial's weights and validation figures come from, for labels."""
        trained = getattr(rec, "shape", None)
        if self._is_ladder and trained:
            shape = "x".join(map(str, trained))
            top = len((self.run.summary.get("ladder") or {}).get("rungs") or []) - 1
            reached = getattr(rec, "rung_reached", None)
            where = (
                "the top rung of the resolution ladder"
                if reached is not None and int(reached) >= top
                else (f"rung {reached} of the resolution ladder, stopped below the top")
            )
            return f"{shape}: {where}"
        proxy_shape = "x".join(map(str, (self.run.summary.get("proxy") or {}).get("shape") or []))
        return f"proxy {proxy_shape}: the proxy trial"

    @property
    def _is_ladder(self) -> bool:
        """True for a search on the resolution ladder (``search.fidelity: ladder``)."""
        return self.run.summary.get("fidelity") == "ladder"

    def _ladder(self) -> list[str]:
        """The candidates climbing the ladder (one line per trial over the rungs) and the compute statement."""
        run = self.run
        rungs = list((run.summary.get("ladder") or {}).get("rungs") or [])
        climbs = self._climbs(len(rungs))
        out = ["<h3>Candidates climbing the ladder</h3>"]
        if rungs and climbs:
            n_top = sum(1 for c in climbs if c["top"])
            out.append(
                self.figure(
                    "ladder",
                    _figs().ladder_figure(
                        climbs, rungs, name=run.names[0], maximize=run.directions[0] == "maximize"
                    ),
                    f"The validation {_e(run.names[0])} of each trial at the end of every rung it completed "
                    f"(rung: input shape and epochs; survivors carry their weights up). {n_top} of "
                    f"{len(climbs)} trial(s) completed the top, full-resolution rung (coloured; the best in "
                    "green); grey: stopped below it (pruned at a rung's end, or failed)."
                    + _promotion_line(climbs)
                    + _inheritance_line(climbs),
                )
            )
        else:
            out.append(self.note("No trial has completed a rung of the resolution ladder yet."))
        line = _compute_line(run.summary.get("compute") or {}, climbs)
        if line:
            out.append(f"<p class='compute'>{line}</p>")
        return out

    def _climbs(self, n_rungs: int) -> list[dict[str, Any]]:
        """One entry per ladder candidate that completed a rung: its primary value per rung, and whether it topped.

        A trial paused and later promoted (deferred promotion) is drawn by its continuation, whose rungs open with
        the paused trial's: one line per candidate.
        """
        promoted = {
            int(c["trial"])
            for rec in self.run.trials.values()
            if isinstance(c := getattr(rec, "continues", None), dict)
        }
        climbs = []
        for n, rec in self.run.trials.items():
            rungs = sorted(getattr(rec, "rungs", None) or [], key=lambda r: int(r.get("rung", 0)))
            if not rungs or n in promoted:
                continue
            reached = getattr(rec, "rung_reached", None)
            compute = getattr(rec, "compute", None) or {}
            climbs.append(
                {
                    "trial": n,
                    "values": [None if r.get("value") is None else float(r["value"]) for r in rungs],
                    "top": reached is not None and n_rungs > 0 and int(reached) >= n_rungs - 1,
                    "state": rec.state,
                    "family": rec.family,
                    "voxel_epochs": compute.get("voxel_epochs"),
                    "seconds": compute.get("seconds"),
                    "parent": getattr(rec, "parent", None),
                    "inherited_fraction": getattr(rec, "inherited_fraction", None),
                    "continues": getattr(rec, "continues", None),
                }
            )
        return climbs

    def _trial_points(self) -> list[dict[str, Any]]:
        """One point per recorded trial for the history plot (pruned ones at their last recorded value)."""
        pts = []
        for n, rec in self.run.trials.items():
            state = rec.state
            values = rec.values
            value = float(values[0]) if values and state == "complete" else None
            if state == "pruned":
                hist = [h.get("value") for h in rec.history or [] if h.get("value") is not None]
                value = float(hist[-1]) if hist else None
            pts.append(
                {
                    "trial": n,
                    "state": state,
                    "value": value,
                    "values": values if state == "complete" else None,
                    "ci95": _objective_ci(rec),
                    "learned": rec.learned,
                    "feasible": rec.feasible,
                    "family": rec.family,
                    "params": rec.params,
                    "reason": rec.reason,
                    "duplicate_of": rec.duplicate_of,
                }
            )
        return pts

    def _importances(self) -> str:
        run = self.run
        if not run.storage or not run.study_name:
            return self.note(
                "Parameter importances need the study storage, which was not found (pass --storage URL)."
            )
        try:
            from mednas.reporting._status import _load_study

            study = _load_study(run.storage, run.study_name)
        except Exception as exc:  # noqa: BLE001 - importances are optional
            return self.note(
                f"Parameter importances need the study storage, which could not be read "
                f"({_e(type(exc).__name__)})."
            )
        import optuna
        from optuna.trial import TrialState

        complete = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.values and "duplicate_of" not in t.user_attrs
        ]
        scopes: dict[str, list[Any]] = {"all trials": complete}
        by_family: dict[str, list[Any]] = {}
        for t in complete:
            # The family is the trial's record's; a trial recorded on another machine has its sampled one.
            rec = run.trials.get(t.number)
            by_family.setdefault(str((rec.family if rec else None) or t.params.get("family")), []).append(t)
        if len(by_family) > 1:  # with one family, "all trials" is that family already
            for fam, ts in sorted(by_family.items(), key=lambda kv: -len(kv[1]))[:3]:
                scopes[f"{fam} trials"] = ts
        results: dict[str, dict[str, float]] = {}
        skipped: list[str] = []
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created in memory" per scope
        try:
            self._fanova(optuna, study, scopes, results, skipped)
        finally:
            optuna.logging.set_verbosity(verbosity)
        out = []
        if results:
            out.append(
                self.figure(
                    "importance",
                    _figs().importance_figure(results),
                    f"How much of the variation of {_e(run.names[0])} each sampled parameter explains "
                    "(Optuna's fANOVA importance, seed 0), over all complete trials and per architecture "
                    "family (a family's own parameters exist only in its trials).",
                )
            )
        if skipped:
            out.append(self.note("Importances left out: " + "; ".join(_e(s) for s in skipped) + "."))
        return "\n".join(out)

    @staticmethod
    def _fanova(
        optuna: Any,
        study: Any,
        scopes: dict[str, list[Any]],
        results: dict[str, dict[str, float]],
        skipped: list[str],
    ) -> None:
        for scope, ts in scopes.items():
            if len(ts) < _MIN_IMPORTANCE_TRIALS:
                skipped.append(f"{scope}: {len(ts)} complete trial(s), {_MIN_IMPORTANCE_TRIALS} needed")
                continue
            sub = optuna.create_study(directions=study.directions)
            sub.add_trials(ts)
            try:
                imp = optuna.importance.get_param_importances(
                    sub,
                    evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
                    target=lambda t: t.values[0],
                )
            except (RuntimeError, ValueError) as exc:
                skipped.append(f"{scope}: {exc}")
                continue
            if len(imp) < 2:
                only = ", ".join(imp) or "no parameter"
                skipped.append(
                    f"{scope}: only {only} is sampled in every one of them"
                    + (
                        "; each family's own parameters are ranked in its panel"
                        if scope == "all trials"
                        else ""
                    )
                )
                continue
            # Within one family the family itself is constant: leave it out of that panel.
            results[scope] = {
                k: float(v) for k, v in imp.items() if not (scope != "all trials" and k == "family")
            }

    def fidelity(self) -> str:
        run, s = self.run, self.run.summary
        fid = s.get("proxy_fidelity")
        done = {n: r for n, r in run.retrain.items() if r.get("state") == "complete"}
        if not fid and not done:
            self.notes.append("not retrained yet")
            return _panel(
                "<strong>Not retrained yet.</strong> The search ranked candidates on a cheap proxy (low resolution, "
                "few epochs). <code>mednas retrain RUN_DIR --top-k 3</code> retrains the best candidates at full "
                "resolution, evaluates each once on the held-out test split, and measures how well the proxy ranking "
                "predicts the full-fidelity one (Kendall tau). Seed noise bounds that agreement: two full "
                "trainings of the same candidates with different seeds do not rank them identically either. "
                "<code>--seeds 2</code> measures that ceiling on this run.",
                cls="not-retrained",
            )
        fid = fid or {}
        out = self._fidelity_text(fid)
        points = self._fidelity_points(done)
        if points:
            out.append(
                self.figure(
                    "fidelity",
                    _figs().fidelity_figure(points, name=run.names[0]),
                    "Proxy against full fidelity for each retrained candidate (labels: trial numbers; error "
                    "bars: 95% bootstrap intervals over patients). Points on the dashed line ranked the "
                    "same; the test objective is evaluated once, at the threshold chosen on validation.",
                )
            )
        rows = self._retrain_rows()
        if rows:
            out.append(
                _table(
                    [
                        "trial",
                        "state",
                        "family",
                        "parameters",
                        "proxy",
                        "validation (full)",
                        "test",
                        "best/epochs",
                        "seconds",
                        "flag",
                        "reason",
                    ],
                    rows,
                )
            )
        return "\n".join(out)

    @staticmethod
    def _fidelity_text(fid: dict[str, Any]) -> list[str]:
        """The paragraphs on the proxy's rank agreement, the seed-noise ceiling, the warning and non-learners."""
        out = []
        tau = fid.get("kendall_tau")
        if tau is not None:
            out.append(
                f"<p><strong>Kendall tau {tau:.2f}</strong>"
                + (f" (p = {fid['kendall_p']:.2g})" if fid.get("kendall_p") is not None else "")
                + f" over {fid.get('n')} retrained candidates that learned"
                + (f"; Spearman rho {fid['spearman']:.2f}" if fid.get("spearman") is not None else "")
                + (f"; top-1 regret {fid['top1_regret']:.4f}" if fid.get("top1_regret") is not None else "")
                + (
                    f" (the proxy's first choice was trial {fid['top1_trial']}, the best at full fidelity trial "
                    f"{fid['best_full_trial']})"
                    if fid.get("top1_trial") is not None
                    else ""
                )
                + ".</p>"
            )
        elif fid.get("reason"):
            out.append(f"<p>Kendall tau undefined: {_e(fid['reason'])}.</p>")
        ceil = fid.get("seed_ceiling_tau")
        if ceil is not None:
            ci = fid.get("seed_ceiling_interval")
            ratio = fid.get("tau_over_ceiling")
            out.append(
                f"<p><strong>Seed-noise ceiling τ {ceil:.2f}</strong>"
                + (f" (95% interval over candidates {ci[0]:.2f} to {ci[1]:.2f})" if ci else "")
                + f": {fid.get('seeds')} full-fidelity trainings of each candidate with different seeds agree this "
                "well with each other, so no proxy can rank these candidates better"
                + (f"; the proxy reaches {ratio:.0%} of it" if ratio is not None else "")
                + ". Full-fidelity "
                "scores below are seed means"
                + (
                    f"; the top-1 regret is {fid['regret_in_seed_sd']:.1f} seed standard deviations"
                    f" ({'within' if fid.get('regret_within_seed_noise') else 'beyond'} seed noise)"
                    if fid.get("regret_in_seed_sd") is not None
                    else ""
                )
                + (
                    f"; the proxy's top 3 {'contain' if fid.get('top3_contains_best') else 'miss'} the best "
                    "candidate"
                    if fid.get("top3_contains_best") is not None
                    else ""
                )
                + (f" ({_e(fid['top3_note'])})" if fid.get("top3_note") else "")
                + ".</p>"
            )
        else:
            out.append(
                "<p class='lead'>Seed-noise ceiling: not measured on this run (<code>mednas retrain RUN_DIR "
                "--seeds 2</code> measures how well full training agrees with itself across seeds, the most any "
                "proxy ranking can reach). With few candidates the tau itself is uncertain: read it together "
                "with the scatter.</p>"
            )
        if fid.get("warning"):
            out.append(f"<div class='note'>{_e(fid['warning'])}</div>")
        if fid.get("n_not_learning"):
            out.append(
                f"<p>{fid['n_not_learning']} candidate(s) never started learning (trials "
                f"{', '.join(map(str, fid.get('not_learning') or []))}): flagged, not ranked.</p>"
            )
        return out

    def _fidelity_points(self, done: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
        """One point per completed retraining: proxy, full-fidelity and test objectives with their intervals."""
        run = self.run
        points = []
        for n, r in done.items():
            proxy_rec = run.trials.get(n)
            val_obj = ((r.get("val") or {}).get("metrics") or {}).get("objective") or {}
            test_obj = ((r.get("test") or {}).get("metrics") or {}).get("objective") or {}
            points.append(
                {
                    "trial": n,
                    "family": r.get("family"),
                    "learned": r.get("learned"),
                    "proxy": (r.get("proxy") or {}).get("value"),
                    "proxy_ci": _objective_ci(proxy_rec),
                    "full": r["val_mean"]
                    if r.get("val_mean") is not None
                    else (r.get("val") or {}).get("objective"),
                    "full_ci": None if r.get("val_mean") is not None else val_obj.get("ci95"),
                    "test": test_obj.get("value"),
                    "test_ci": test_obj.get("ci95"),
                }
            )
        return points

    def _retrain_rows(self) -> list[list[str]]:
        """One table row per retrained candidate, whatever its state."""
        run = self.run
        rows = []
        for n, r in sorted(run.retrain.items()):
            val = ((r.get("val") or {}).get("metrics") or {}).get("objective") or {}
            test = ((r.get("test") or {}).get("metrics") or {}).get("objective") or {}
            rows.append(
                [
                    str(n),
                    f"<span class='state-{_e(str(r.get('state')))}'>{_e(str(r.get('state')))}</span>",
                    _e(str(r.get("family") or "")),
                    f"{r.get('params') or 0:,}",
                    _fmt((r.get("proxy") or {}).get("value")),
                    _fmt(val.get("value")) + _ci_span(val.get("ci95")),
                    _fmt(test.get("value")) + _ci_span(test.get("ci95")),
                    f"{r.get('best_epoch', '')}/{r.get('epochs', '')}",
                    _fmt(r.get("seconds"), 1),
                    "" if r.get("learned") is not False else "never started learning",
                    _e(str(r.get("reason") or "")),
                ]
            )
        return rows

    def performance(self) -> str:
        run = self.run
        sources = self._prediction_sources()
        if not sources:
            if run.best_trial is None:
                return self.note("No trial has completed yet.")
            return self.note(
                "Per-case predictions are missing (this run predates <code>trials/&lt;n&gt;/predictions.json</code>"
                " or its best trial's record was removed): the curves need them. The best candidate's "
                "figures with their intervals are in the overview."
            )
        out = [
            "<p class='lead'>Sources: "
            + "; ".join(_e(src["label"]) for src in sources)
            + ". Every band and interval resamples patients (95%, percentile bootstrap).</p>"
        ]
        if run.problem == "classification":
            out.append(self._classification(sources))
        else:
            out.append(self._segmentation(sources))
        return "\n".join(out)

    def _prediction_sources(self) -> list[dict[str, Any]]:
        run = self.run
        sources = []
        best = run.best_trial
        rb = run.retrained_best
        retrained_preds = run.predictions(run.rd.retrain_dir(rb)) if rb is not None else {}
        # The curves describe the model export ships: the retrained one; the proxy trial's only without it.
        if best is not None and not retrained_preds:
            preds = run.predictions(run.rd.trial_dir(best))
            rec = run.trials.get(best) or TrialRecord(trial=best)
            if "val" in preds:
                trained = self._trial_trained_at(rec)
                sources.append(
                    {
                        "label": f"search, trial {best}, validation ({trained}, not retrained)",
                        "short": f"{'ladder' if 'ladder' in trained else 'proxy'} trial {best}, val",
                        "pred": preds["val"],
                        "metrics": rec.metrics or {},
                        "op": rec.operating_point,
                        "split": "val",
                    }
                )
        if rb is not None:
            preds = retrained_preds
            rec = run.retrain[rb]
            shape = "x".join(map(str, rec.get("shape") or []))
            if "val" in preds:
                sources.append(
                    {
                        "label": f"retrained trial {rb}, validation ({shape})",
                        "short": f"retrained {rb}, val",
                        "pred": preds["val"],
                        "metrics": (rec.get("val") or {}).get("metrics") or {},
                        "op": rec.get("operating_point"),
                        "split": "val",
                    }
                )
            if "test" in preds:
                test = rec.get("test") or {}
                sources.append(
                    {
                        "label": f"retrained trial {rb}, test ({shape})",
                        "short": f"retrained {rb}, test",
                        "pred": preds["test"],
                        "metrics": test.get("metrics") or {},
                        "op": test.get("operating_point") or rec.get("operating_point"),
                        "split": "test",
                    }
                )
            if not preds:
                self.notes.append("retrain wrote no per-case predictions: curves show the proxy trial")
        return sources

    def _classification(self, sources: list[dict[str, Any]]) -> str:
        roc, pr, cal, confusions = [], [], [], []
        for i, src in enumerate(sources):
            curves = self._classification_curves(i, src)
            if curves is None:
                continue
            roc_entry, pr_entry, confusion = curves
            roc.append(roc_entry)
            pr.append(pr_entry)
            p = src["pred"]
            cal.append(
                {
                    "label": src["short"],
                    "bins": _curves().calibration_bins(p.get("finding") or [], p.get("scores") or []),
                }
            )
            if confusion is not None:
                confusions.append(confusion)
        return self._classification_figures(sources, roc, pr, cal, confusions)

    def _classification_curves(
        self, i: int, src: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any], tuple[dict[str, Any], Any, float] | None] | None:
        """ROC and PR entries of one prediction source, and its confusion matrix at the operating threshold
        (None without a finite threshold); None when its cases cannot draw curves."""
        C = _curves()
        p = src["pred"]
        finding, scores, patients = (
            p.get("finding") or [],
            p.get("scores") or [],
            p.get("patients") or p.get("cases") or [],
        )
        if not scores or len(set(finding)) < 2:
            self.notes.append(f"{src['label']}: curves need cases with and without the finding")
            return None
        metrics = src["metrics"]
        band = C.roc_band(finding, scores, patients, seed=i)
        prb = C.pr_band(finding, scores, patients, seed=i)
        op = dict(src.get("op") or {})
        thr = op.get("threshold")
        confusion = None
        if thr is not None and math.isfinite(float(thr)):
            m = C.confusion_at_threshold(finding, scores, float(thr))
            tn, fp, fn, tp = m.ravel()
            op.update(
                sensitivity=tp / max(1, tp + fn),
                specificity=tn / max(1, tn + fp),
                precision=(tp / (tp + fp)) if tp + fp else None,
                sensitivity_ci=(metrics.get("sensitivity") or {}).get("ci95"),
                specificity_ci=(metrics.get("specificity") or {}).get("ci95"),
            )
            confusion = (src, m, float(thr))
        else:
            op = {}
            self.notes.append(
                f"{src['label']}: no finite operating threshold (no case could be called within the rule)"
            )
        auroc = metrics.get("auroc") or {}
        auprc = metrics.get("auprc") or {}
        return (
            {
                "label": src["short"],
                "band": band,
                "operating_point": op,
                "auroc": (auroc.get("value", band.area), auroc.get("ci95") or list(band.area_ci)),
            },
            {
                "label": src["short"],
                "band": prb,
                "operating_point": op,
                "auprc": (auprc.get("value", prb.area), auprc.get("ci95") or list(prb.area_ci)),
            },
            confusion,
        )

    def _classification_figures(
        self,
        sources: list[dict[str, Any]],
        roc: list[dict[str, Any]],
        pr: list[dict[str, Any]],
        cal: list[dict[str, Any]],
        confusions: list[tuple[dict[str, Any], Any, float]],
    ) -> str:
        """The ROC and PR curves side by side, then calibration and the confusion matrices."""
        F = _figs()
        out = []
        if roc:
            out.append("<div class='grid2'>")
            out.append(
                self.figure(
                    "roc",
                    F.roc_figure(roc),
                    "ROC curve of the finding score with its 95% band (shaded; patient bootstrap), AUROC with "
                    "its interval, and the operating point (star, with the intervals of its sensitivity and "
                    "specificity) chosen on validation by the objective's rule; dashed: chance.",
                )
            )
            out.append(
                self.figure(
                    "pr",
                    F.pr_figure(pr),
                    "Precision-recall curve with its 95% band (shaded); AUPRC (average precision) with its "
                    "interval; the operating point (star); dotted: a classifier without skill (precision = "
                    "the finding's prevalence).",
                )
            )
            out.append("</div>")
        if cal:
            out.append("<div class='grid2'>")
            out.append(
                self.figure(
                    "calibration",
                    F.calibration_figure(cal),
                    "Calibration: observed finding rate per bin of predicted probability (marker size: cases "
                    "in the bin; error bars: Wilson 95% interval). Points on the diagonal are calibrated."
                    + _brier_text(sources),
                )
            )
            for j, (src, m, thr) in enumerate(confusions):
                out.append(
                    self.figure(
                        f"confusion-{j}",
                        F.confusion_figure(m, threshold=thr),
                        f"Confusion matrix of {_e(src['label'])} at the operating threshold {thr:.4f}: "
                        + _sens_spec_text(src["metrics"]),
                    )
                )
            out.append("</div>")
        if not out:
            return self.note("The curves need validation cases with and without the finding.")
        return "\n".join(out)

    def _segmentation(self, sources: list[dict[str, Any]]) -> str:
        from mednas.reporting import _curves as C

        F = _figs()
        series, out = [], []
        for src in sources:
            p = src["pred"]
            per_case = p.get("per_case") or []
            if not per_case:
                continue
            dice = src["metrics"].get("dice") or {}
            series.append(
                {
                    "label": src["short"],
                    "values": [c.get("dice") for c in per_case],
                    "cases": p.get("cases"),
                    "mean": dice.get("value", float(np.nanmean([c.get("dice", np.nan) for c in per_case]))),
                    "ci95": dice.get("ci95"),
                }
            )
        if series:
            out.append(
                self.figure(
                    "dice",
                    F.dice_figure(series),
                    "Dice per case (finding classes as one region); the diamond is the mean with its 95% "
                    "bootstrap interval over patients.",
                )
            )
        for i, src in enumerate(sources):
            p = src["pred"]
            bins = C.lesion_sensitivity_by_size(p, seed=i)
            if not bins:
                continue
            m = src["metrics"]
            ls = m.get("lesion_sensitivity") or {}
            fp = m.get("false_positive_lesions_per_case") or {}
            text = (
                f"Lesion detection of {_e(src['label'])} by lesion size (rule <code>{_e(str(p.get('overlap') or 'any'))}"
                f"</code>; sizes in voxels at the evaluated resolution; bins hold equal numbers of lesions; error bars: 95% "
                "bootstrap intervals over patients)"
            )
            if ls.get("value") is not None:
                text += f". Pooled lesion sensitivity {ls['value']:.3f}{_ci_span(ls.get('ci95'))}"
            if fp.get("value") is not None:
                text += f", false-positive lesions per case {fp['value']:.2f}{_ci_span(fp.get('ci95'))}"
            out.append(
                self.figure(f"lesions-{i}", F.lesion_size_figure(bins, p.get("lesions") or []), text + ".")
            )
        if not out:
            return self.note("No per-case segmentation results to plot.")
        return "\n".join(out)

    def cases(self, n_cases: int | None) -> str:
        from mednas.reporting._gallery import build_gallery

        gallery = build_gallery(self.run, n_cases)
        if gallery.reason:
            return self.note(_e(gallery.reason))
        self.n_images += gallery.n_images
        return gallery.html

    def trials(self) -> str:
        run = self.run
        if not run.trials:
            return self.note("No trial records yet.")
        best = run.best_trial
        inherit = self._inherits
        rows = [self._trial_cells(r, inherit=inherit) for r in run.trials.values()]
        classes = ["best" if n == best else "" for n in run.trials]
        head = [
            "trial",
            "state",
            "family",
            *(["parent (inherited)"] if inherit else []),
            "parameters",
            f"{run.names[0]} (95% CI)",
            *run.names[1:],
            "best/epochs",
            "seconds",
            "loss",
            "spec",
            "note",
        ]
        body = "".join(f"<tr class='{c}'>{''.join(cells)}</tr>" for cells, c in zip(rows, classes))
        return (
            "<p class='lead'>Every trial of the search (click a column to sort; the best is highlighted). Each "
            "architecture rebuilds from <code>trials/&lt;n&gt;/spec.json</code>."
            + (
                " Weight inheritance is on (<code>search.inherit</code>): <em>parent</em> is the finished trial "
                "whose weights a trial started from, with the share of its network's weights they filled; "
                "<em>fresh</em>: no candidate of its family had finished yet."
                if inherit
                else ""
            )
            + "</p>"
            f"<div class='scroll'><table class='sortable'><thead><tr>{''.join(f'<th>{_e(h)}</th>' for h in head)}"
            f"</tr></thead><tbody>{body}</tbody></table></div>"
        )

    @property
    def _inherits(self) -> bool:
        """True for a search with weight inheritance (``search.inherit``), or one whose trials name a parent."""
        if (self.run.resolved.get("search") or {}).get("inherit"):
            return True
        return any(getattr(r, "parent", None) is not None for r in self.run.trials.values())

    def _trial_cells(self, r: TrialRecord, *, inherit: bool = False) -> list[str]:
        """The cells of one trial's row in the trials table (sort keys in ``data-sort``)."""
        names = self.run.names
        state = r.state
        values = r.values if state == "complete" else None
        value = values[0] if values else None
        return [
            f"<td class='num' data-sort='{r.trial}'>{r.trial}</td>",
            f"<td class='state-{_e(state)}'>{_e(state)}</td>",
            f"<td>{_e(str(r.family or ''))}</td>",
            *([_parent_cell(r)] if inherit else []),
            f"<td class='num' data-sort='{r.params or 0}'>{(r.params or 0):,}</td>",
            f"<td class='num' data-sort='{'' if value is None else value}'>{_fmt(value)}{_ci_span(_objective_ci(r))}</td>",
            *[f"<td class='num'>{_fmt(v, 4)}</td>" for v in (values or [None] * len(names))[1 : len(names)]],
            f"<td class='num'>{r.best_epoch or ''}{'/' if r.epochs else ''}{r.epochs or ''}</td>",
            f"<td class='num' data-sort='{r.seconds or 0}'>{_fmt(r.seconds, 1)}</td>",
            f"<td>{_e(str(r.loss or ''))}</td>",
            f"<td><code>{_e(str(r.spec_hash or ''))}</code></td>",
            f"<td>{_e('; '.join(_trial_note(r)))}</td>",
        ]

    def data(self) -> str:
        run = self.run
        s, splits = run.summary, run.splits
        out = [
            "<h3>Fingerprint</h3>",
            _table(["", ""], self._fingerprint_rows(), header=False),
            "<h3>Splits (grouped by patient)</h3>",
            _table(["split", "cases", "patients", "cases per class index"], self._split_rows()),
        ]
        out.append(
            f"<p>Split method {_e(str(splits.get('method') or ''))}, seed {_e(str(splits.get('seed', '')))}, hash "
            f"<code>{_e(str(splits.get('hash') or ''))}</code>. The test split is read only by <code>mednas retrain"
            "</code>, once per candidate.</p>"
        )
        proxy = s.get("proxy") or {}
        out.append("<h3>Proxy</h3>")
        out.append(
            _table(
                ["", ""], [[k.replace("_", " "), _e(json.dumps(v))] for k, v in proxy.items()], header=False
            )
        )
        return "\n".join(out)

    def _fingerprint_rows(self) -> list[list[str]]:
        """What the data fingerprint says: cases, patients, modality, shapes, classes, normalisation, hash."""
        s, fp = self.run.summary, self.run.fingerprint
        fs = fp.get("summary") or {}
        rows = [
            ["cases", str(fs.get("n_cases", (s.get("data") or {}).get("n_cases", "")))],
            ["patients", str(fs.get("n_patients", ""))],
            [
                "modality",
                _e(
                    str(
                        fs.get("modality")
                        or ", ".join(f"{k} x{v}" for k, v in (fs.get("modalities") or {}).items())
                    )
                ),
            ],
        ]
        for key, label in (
            ("min_shape", "smallest shape"),
            ("median_shape", "median shape"),
            ("max_shape", "largest shape"),
            ("median_spacing", "median spacing (mm)"),
        ):
            if fs.get(key) is not None:
                rows.append([label, " x ".join(f"{v:g}" for v in fs[key])])
        if fs.get("class_counts"):
            rows.append(
                [
                    "classes",
                    ", ".join(
                        f"{_e(str(k))} {v} ({(fs.get('class_fraction') or {}).get(k, 0):.0%})"
                        for k, v in fs["class_counts"].items()
                    ),
                ]
            )
        for key in ("label_sanity", "orientations"):
            if fs.get(key):
                rows.append([key.replace("_", " "), _e(json.dumps(fs[key]))])
        sug = fp.get("suggestions") or {}
        if sug.get("normalize"):
            rows.append(
                [
                    "normalisation",
                    _e(
                        f"{(s.get('proxy') or {}).get('normalize') or sug['normalize']}"
                        + (f" ({sug['normalize_reason']})" if sug.get("normalize_reason") else "")
                    ),
                ]
            )
        rows.append(
            [
                "fingerprint hash",
                f"<code>{_e(str(fp.get('hash') or (s.get('data') or {}).get('fingerprint_hash') or ''))}</code>",
            ]
        )
        return rows

    def _split_rows(self) -> list[list[str]]:
        """Per split: cases, patients and (classification) cases per class index."""
        run = self.run
        s, fp, splits = run.summary, run.fingerprint, run.splits
        patient_of = {c.get("case"): c.get("patient") for c in fp.get("cases") or []}
        label_of = {c.get("case"): c.get("label") for c in fp.get("cases") or []}
        srows = []
        for split in ("train", "val", "test"):
            keys = splits.get(split) or []
            if not keys and split not in ((s.get("data") or {}).get("splits") or {}):
                continue
            n = len(keys) or ((s.get("data") or {}).get("splits") or {}).get(split, 0)
            patients = len({patient_of.get(k) for k in keys if patient_of.get(k)})
            labels = [label_of.get(k) for k in keys if isinstance(label_of.get(k), int)]
            dist = (
                ", ".join(f"{v}: {labels.count(v)}" for v in sorted(set(labels)))
                if labels and run.problem == "classification"
                else ""
            )
            srows.append([split, str(n), str(patients or ""), dist])
        return srows

    def settings(self) -> str:
        import yaml

        run = self.run
        if not run.resolved:
            return self.note(f"{RESOLVED} is missing.")
        from mednas.io._scrub import hide_paths

        shown = (
            hide_paths(run.resolved, _PATH_KEYS, _HIDDEN_PATH) if not run.show_file_names else run.resolved
        )
        text = yaml.safe_dump(shown, sort_keys=False, default_flow_style=None, width=110)
        hidden = (
            ""
            if run.show_file_names
            else (
                " Data paths are hidden (<code>privacy.show_file_names</code> is false); "
                "the fingerprint hash identifies the data."
            )
        )
        return (
            f"<p class='lead'>The validated task as the search ran it (<code>{RESOLVED}</code>: presets and "
            f"overrides applied; config hash <code>{_e(str(run.env.get('config_hash') or ''))}</code>).{hidden}</p>"
            f"<pre>{_e(text)}</pre>"
        )

    def environment(self) -> str:
        env = self.run.env
        if not env:
            return self.note("env.json is missing.")
        rows = [[_e(k.replace("_", " ")), _e(str(v))] for k, v in env.items() if k != "versions"]
        versions = env.get("versions") or {}
        vrows = [[_e(k), _e(str(v))] for k, v in versions.items()]
        return (
            "<div class='grid2'><div>"
            + _table(["", ""], rows, header=False)
            + "</div><div>"
            + _table(["package", "version"], vrows)
            + "</div></div>"
        )

    def dashboard(self) -> str:
        run = self.run
        url = run.storage
        root = run.rd.root
        shown_url = url if url else "STORAGE_URL"
        if shown_url.startswith("journal://"):  # optuna-dashboard takes a journal file by its path
            shown_url = shown_url[len("journal://") :]
            shown_url = shown_url[1:] if shown_url.startswith("//") else shown_url
        from mednas.io._scrub import redact_url

        return (
            "<p>Follow a running search, or look at any run, from the command line:</p>"
            f"<pre>mednas status {_e(str(root))}            # trials table and best so far (also while running)\n"
            f"mednas status {_e(str(root))} --json     # the same, machine-readable\n"
            f"mednas report {_e(str(root))}            # rewrite this report</pre>"
            "<p>The study storage opens in Optuna's dashboard (<code>pip install optuna-dashboard</code>), which has "
            "its own history, importance, parallel-coordinate and slice plots:</p>"
            f"<pre>optuna-dashboard {_e(redact_url(shown_url))}</pre>"
        )

    # -- render

    def render(self, plotlyjs: str, target: Path) -> tuple[str, dict[str, str]]:
        import plotly
        from plotly.offline import get_plotlyjs

        from mednas._versions import package_version
        from mednas.reporting._template import CSS, PAGE, SORT_SCRIPT

        mednas_version = package_version("mednas") or "?"
        extra: dict[str, str] = {}
        if plotlyjs == "inline":
            script = f'<script type="text/javascript">{get_plotlyjs()}</script>'
            where = "inline"
        else:
            name = f"plotly-{plotly.__version__}.min.js"
            extra[name] = get_plotlyjs()
            script = f'<script type="text/javascript" src="{name}"></script>'
            where = f"in {name} beside this file"
        nav = "".join(f"<a href='#{sid}'>{_e(title)}</a>" for sid, title, _ in self.sections)
        body = "\n".join(
            f"<section id='{sid}'>{'' if sid == 'overview' else f'<h2>{_e(title)}</h2>'}\n{content}</section>"
            for sid, title, content in self.sections
        )
        meta = {
            "figures": self.figure_ids,
            "images": self.n_images,
            "notes": self.notes,
            "errors": self.errors,
            "task": self.run.summary.get("task"),
            "simulated_data": self.run.summary.get("simulated_data"),
            "mednas": mednas_version,
            "plotly": plotly.__version__,
        }
        task = str(self.run.summary.get("task") or "run")
        text = PAGE.format(
            version=_e(mednas_version),
            title=_e(f"mednas report: {task}"),
            css=CSS,
            plotly=script,
            brand="mednas report",
            subtitle=_e(task),
            nav=nav,
            body=body,
            footer=(
                f"Written by mednas {_e(mednas_version)} on {time.strftime('%Y-%m-%d %H:%M')} from the run directory "
                f"<code>{_e(self.run.rd.root.resolve().name)}</code>. Cases appear only as\nsalted keys. This file "
                f"needs no network: plotly.js {_e(plotly.__version__)} is {where}."
            ),
            meta=json.dumps(meta).replace("</", "<\\/"),
            sort_script=SORT_SCRIPT,
            scripts="",
        )
        return text, extra


# ------------------------------------------------------------------------------------------ small helpers


def _trial_note(r: TrialRecord) -> list[str]:
    """What the trials table says of a trial beyond its numbers: twin, retry, not learning, seeds, constraints."""
    note = []
    if r.duplicate_of is not None:
        note.append(f"same as trial {r.duplicate_of}")
    if r.retry_of is not None:
        note.append(f"retry of trial {r.retry_of}")
    if r.learned is False:
        # A pruned one's reason already says why ("not learning: ..."); a complete one's is in not_learning.
        why = r.not_learning if r.state == "complete" else None
        note.append("never started learning" + (f" ({why})" if why else ""))
    proxy_mean = getattr(r, "proxy_mean", None)  # written by re-evaluation with extra seeds
    if proxy_mean is not None:
        note.append(f"mean over {len(getattr(r, 'proxy_seed_values', None) or [])} seeds {_fmt(proxy_mean)}")
    note += _ladder_note(r)
    if r.feasible is False:
        note.append("violates a constraint")
    if r.reason:
        note.append(str(r.reason))
    return note


def _ladder_note(r: TrialRecord) -> list[str]:
    """A ladder trial's climb for the trials table: the rung it reached and any rung it had to restart."""
    reached = getattr(r, "rung_reached", None)
    if getattr(r, "fidelity", None) != "ladder" or reached is None:
        return []
    shape = "x".join(map(str, getattr(r, "shape", None) or []))
    note = [f"ladder: reached rung {reached}" + (f" ({shape})" if shape else "")]
    restarted = [str(g.get("rung")) for g in getattr(r, "rungs", None) or [] if g.get("start") == "restarted"]
    if restarted:
        note.append(
            f"restarted from fresh weights at rung {', '.join(restarted)} (could not run at the new size)"
        )
    return note


def _parent_cell(r: TrialRecord) -> str:
    """A trial's parent and inherited fraction (``search.inherit``): ``3 (72%)``, ``fresh``, or empty."""
    parent, fraction = getattr(r, "parent", None), getattr(r, "inherited_fraction", None)
    if parent is not None:
        share = f" <span class='s'>({float(fraction):.0%})</span>" if fraction is not None else ""
        return f"<td class='num' data-sort='{int(parent)}'>{int(parent)}{share}</td>"
    if fraction is not None:  # inheritance was on and nothing of its family had finished: it started fresh
        return "<td class='num' data-sort='-1'>fresh</td>"
    return "<td class='num' data-sort='-2'></td>"  # never trained (rejected, or reusing a twin's score)


def _inheritance_line(climbs: list[dict[str, Any]]) -> str:
    """One sentence on weight inheritance up the ladder: how many trials started from a parent, and how much."""
    inherited = [c for c in climbs if c.get("parent") is not None]
    if not inherited:
        return ""
    shares = sorted(float(c.get("inherited_fraction") or 0.0) for c in inherited)
    spread = f"{shares[0]:.0%}" if shares[0] == shares[-1] else f"{shares[0]:.0%}-{shares[-1]:.0%}"
    return (
        f" {len(inherited)} of {len(climbs)} trial(s) started rung 0 from a finished candidate's weights "
        f"(<code>search.inherit</code>), filling {spread} of their network; the trials table names each parent."
    )


def _promotion_line(climbs: list[dict[str, Any]]) -> str:
    """The ladder caption's note on deferred promotion: how many candidates paused and climbed on later."""
    n = sum(1 for c in climbs if c.get("continues"))
    if not n:
        return ""
    return (
        f" {n} of them paused at a rung's end and climbed on later, when promoted (deferred promotion); each is "
        "drawn as one line, its continuation's trial number."
    )


def _compute_line(compute: dict[str, Any], climbs: list[dict[str, Any]]) -> str:
    """One sentence on the ladder search's compute: the total, and the share spent on candidates later pruned."""
    total = compute.get("voxel_epochs")
    if total is None:
        return ""
    share = compute.get("pruned_share")
    if share is None and total and compute.get("pruned_voxel_epochs") is not None:
        share = float(compute["pruned_voxel_epochs"]) / float(total)
    seconds = compute.get("seconds")
    if seconds is None:
        seconds = sum(float(c.get("seconds") or 0.0) for c in climbs)
    return (
        f"Compute: {_count(float(total))} voxel-epochs in total (training cases x voxels per case x epochs, "
        "summed over every trial and rung)"
        + (f", over {seconds:,.0f} s of trial time" if seconds else "")
        + (f"; {share:.0%} of it spent on candidates later pruned." if share is not None else ".")
    )


def _count(x: float) -> str:
    """A large count for reading: 4.2 million, 1.3 billion, 52,000."""
    for size, word in ((1e12, "trillion"), (1e9, "billion"), (1e6, "million")):
        if x >= size:
            return f"{x / size:.3g} {word}"
    return f"{x:,.0f}"


def _curves() -> Any:
    from mednas.reporting import _curves

    return _curves


def _figs() -> Any:
    from mednas.reporting import _figures

    return _figures


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _strip_tags(text: str) -> str:
    import re

    return re.sub(r"<[^>]+>", "", text)


def _panel(text: str, *, error: bool = False, cls: str = "") -> str:
    return f"<div class='panel{' error' if error else ''}{' ' + cls if cls else ''}'>{text}</div>"


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a" if v is not None else ""
    if isinstance(v, (int, float)):
        return f"{v:.{digits}f}"
    return _e(str(v))


def _objective_ci(rec: TrialRecord | None) -> list[float] | None:
    """The 95% interval of a trial's primary objective (None without a record or an interval)."""
    return (((rec.metrics or {}).get("objective") or {}).get("ci95")) if rec is not None else None


def _ci_span(ci: Any) -> str:
    if not ci or len(ci) != 2 or ci[0] is None or ci[1] is None:
        return ""
    return f" <span class='s'>({ci[0]:.3f}-{ci[1]:.3f})</span>"


def _table(head: list[str], rows: list[list[str]], *, header: bool = True) -> str:
    thead = f"<thead><tr>{''.join(f'<th>{_e(h)}</th>' for h in head)}</tr></thead>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def _retrained_cards(rb: int, rec: dict[str, Any], fid: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The overview's cards of the retrained best candidate and of the proxy's rank agreement."""
    test_obj = ((rec.get("test") or {}).get("metrics") or {}).get("objective") or {}
    tau = fid.get("kendall_tau")
    ceil = fid.get("seed_ceiling_tau")
    ceiling_text = (
        f"seed-noise ceiling measured here: τ {ceil:.2f}"
        if ceil is not None
        else "seed-noise ceiling not measured on this run"
    )
    return [
        (
            "retrained best",
            f"{(rec.get('val') or {}).get('objective', float('nan')):.3f}",
            f"trial {rb}, validation at full fidelity; test {_fmt(test_obj.get('value'))}{_ci_span(test_obj.get('ci95'))}",
        ),
        (
            "proxy fidelity",
            f"τ {tau:.2f}" + (f" of {ceil:.2f}" if ceil is not None else "") if tau is not None else "n/a",
            f"Kendall tau over {fid.get('n')} candidates ({ceiling_text})"
            if tau is not None
            else _e(fid.get("reason") or ""),
        ),
    ]


def _best_proxy_html(best: dict[str, Any], stage: str = "proxy") -> list[str]:
    """The best search candidate's metrics table and operating point (from the summary's ``best``).

    ``stage`` says where its figures come from: ``proxy``, or the ladder rung its weights reached.
    """
    out = [
        f"<h3>Best candidate: trial {best['trial']} ({_e(stage)}, validation)</h3>",
        _metrics_table({f"validation ({stage})": best.get("metrics") or {}}),
    ]
    op = best.get("operating_point")
    if op and op.get("threshold") is not None:
        out.append(
            f"<p>Operating point ({_e(str(op.get('rule') or ''))}): threshold {op['threshold']:.4f}, "
            f"sensitivity {_fmt(op.get('sensitivity'))}, specificity {_fmt(op.get('specificity'))}.</p>"
        )
    return out


def _retrained_html(rb: int, rec: dict[str, Any]) -> list[str]:
    """The retrained best candidate's validation and test metrics, per-class table and calibration."""
    return [
        f"<h3>Retrained at full fidelity: trial {rb} ({'x'.join(map(str, rec.get('shape') or []))})</h3>",
        _metrics_table(
            {
                "validation": (rec.get("val") or {}).get("metrics") or {},
                "test (once, at the validation threshold)": (rec.get("test") or {}).get("metrics") or {},
            }
        ),
        "<p>Every test figure is computed at the operating threshold chosen on validation, never "
        "re-chosen on test: a floor metric (e.g. sensitivity at a specificity floor) on test is the rate "
        "at that threshold, and the specificity row says whether the floor held there.</p>",
        _per_class_table(
            {
                "validation": (rec.get("val") or {}).get("per_class") or {},
                "test": (rec.get("test") or {}).get("per_class") or {},
            }
        ),
        _calibration_html(rec.get("calibration")),
    ]


def _metrics_table(columns: dict[str, dict[str, Any]]) -> str:
    names = sorted({k for m in columns.values() for k in m})
    if not names:
        return ""
    rows = []
    for name in (["objective"] if "objective" in names else []) + [n for n in names if n != "objective"]:
        cells = [f"<strong>{_e(name)}</strong>" if name == "objective" else _e(name)]
        for m in columns.values():
            v = m.get(name) or {}
            cells.append(f"{_fmt(v.get('value'))}{_ci_span(v.get('ci95'))}" if v else "")
        rows.append(cells)
    return _table(["metric", *[f"{c} (95% CI)" for c in columns]], rows)


def _per_class_table(columns: dict[str, dict[str, Any]]) -> str:
    """Per class: recall (sensitivity), PPV (precision) and cases, per split, with 95% intervals."""
    columns = {k: v for k, v in columns.items() if v}
    if not columns:
        return ""
    names = list(next(iter(columns.values())))
    rows = []
    for name in names:
        cells = [_e(str(name))]
        for pc in columns.values():
            c = pc.get(name) or {}
            for key in ("recall", "ppv"):
                v = c.get(key) or {}
                cells.append(
                    f"{_fmt(v.get('value'))}{_ci_span(v.get('ci95'))}"
                    if v.get("value") is not None
                    else "n/a"
                )
            cells.append(str(c.get("n", "")))
        rows.append(cells)
    head = ["class"] + [
        f"{split} {what}" for split in columns for what in ("recall / sensitivity", "PPV / precision", "n")
    ]
    return (
        "<p>Per class, each case called as <code>mednas predict</code> calls it at the operating threshold:</p>"
        + _table(head, rows)
    )


def _calibration_html(cal: dict[str, Any] | None) -> str:
    """Temperature scaling of the retrained model and the operating point's warnings."""
    if not cal:
        return ""

    def f(v: Any) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    out = [
        f"<p>Calibration (temperature scaling on the {cal.get('n_cases')} validation cases): temperature "
        f"<strong>{cal['temperature']:.3f}</strong>; ECE {f(cal.get('ece_before'))} before, {f(cal.get('ece_after'))} "
        f"after; NLL {f(cal.get('nll_before'))} before, {f(cal.get('nll_after'))} after. Probabilities, curves and the "
        "operating point are the calibrated ones. The operating point was chosen on the validation distribution: "
        "re-check it with <code>mednas evaluate</code> on the target population.</p>"
    ]
    out += [f"<div class='note'>Warning: {_e(w)}</div>" for w in cal.get("warnings") or []]
    return "\n".join(out)


def _brier_text(sources: list[dict[str, Any]]) -> str:
    parts = []
    for src in sources:
        m = src["metrics"]
        for key, label in (("brier", "Brier score"), ("ece", "ECE")):
            v = m.get(key) or {}
            if v.get("value") is not None:
                parts.append(f"{label} ({_e(src['label'])}) {v['value']:.3f}{_ci_span(v.get('ci95'))}")
    return (" " + "; ".join(parts) + ".") if parts else ""


def _sens_spec_text(metrics: dict[str, Any]) -> str:
    bits = []
    for key in ("sensitivity", "specificity", "ppv", "npv"):
        v = metrics.get(key) or {}
        if v.get("value") is not None:
            bits.append(f"{key} {v['value']:.3f}{_ci_span(v.get('ci95'))}")
    return (", ".join(bits) + ".") if bits else "counts and the share of each true class."


#: Keys of resolved.yaml whose values are file-system paths of the data (they can hold patient names): hidden
#: in the report unless ``privacy.show_file_names``.
_PATH_KEYS = {"path", "cache_dir"}
_HIDDEN_PATH = "(hidden: privacy.show_file_names is false)"
