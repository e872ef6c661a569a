"""``validation.html``: one self-contained page of an external validation, with the promise flag on top.

Uses the run report's style, plotly figures and curve helpers (:mod:`mednas.reporting`), so the two pages read alike;
plotly.js is inline, so the file opens offline and can be sent as it is.
"""

from __future__ import annotations

import html
import json
import math
import time
from typing import Any

__all__ = ["render_html"]

_STATUS_STYLE = {
    "failed": ("banner", "PROMISE FAILED"),
    "uncertain": ("note", "PROMISE UNCERTAIN"),
    "held": ("panel ok", "PROMISE HELD"),
}
_EXTRA_CSS = """
.panel.ok { border: 2px solid var(--ok); background: #eef7ee; }
.promise { font-size: 16px; }
.promise .status { font-weight: 700; letter-spacing: 0.04em; margin-right: 8px; }
.s { color: var(--muted); font-size: 12px; }
"""
# A plot drawn while its grid had one column keeps that width when the second column arrives: fit them once laid out.
_RESIZE = """<script>
window.addEventListener('load', function () {
  document.querySelectorAll('.js-plotly-plot').forEach(function (gd) { Plotly.Plots.resize(gd); });
});
</script>
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _num(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.{digits}f}" if isinstance(v, float) else _e(v)


def _ci(m: dict[str, Any] | None) -> str:
    if not m or m.get("value") is None:
        return "n/a"
    lo, hi = (m.get("ci95") or [None, None])[:2]
    span = f" <span class='s'>[{lo:.3f}, {hi:.3f}]</span>" if lo is not None and hi is not None else ""
    return f"{m['value']:.3f}{span}"


def _table(head: list[str], rows: list[list[str]], *, sortable: bool = False) -> str:
    thead = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    cls = " class='sortable'" if sortable else ""
    return f"<table{cls}><thead><tr>{thead}</tr></thead><tbody>{body}</tbody></table>"


class _Page:
    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record
        self.population = record["population"]
        self.figure_ids: list[str] = []
        self.sections: list[tuple[str, str, str]] = []

    def figure(self, fid: str, fig: Any, caption: str) -> str:
        div = fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=f"fig-{fid}",
            config={
                "displaylogo": False,
                "responsive": True,
                "toImageButtonOptions": {"format": "svg", "filename": f"mednas-validation-{fid}"},
            },
        )
        self.figure_ids.append(fid)
        return (
            f'<figure class="mednas-figure" data-figure="{_e(fid)}">{div}<figcaption>{caption} '
            f"<em>Data: {_e(self.population)}.</em></figcaption></figure>"
        )

    def add(self, sid: str, title: str, body: str) -> None:
        self.sections.append((sid, title, body))


def render_html(record: dict[str, Any], curves: dict[str, Any]) -> str:
    """Return the page for a ``validation.json`` record and the per-case arrays its curves need.

    Args:
        record: What ``validation.json`` holds.
        curves: ``patients``; classification ``finding`` and ``score``; segmentation ``dice`` (per case).
    """
    import plotly
    from plotly.offline import get_plotlyjs

    from mednas.reporting._template import CSS, PAGE, SORT_SCRIPT

    page = _Page(record)
    page.add("overview", "Overview", _overview(record))
    if record["bundle"]["problem"] == "classification":
        page.add("curves", "Discrimination and calibration", _classification_figures(page, record, curves))
        page.add("tables", "Per class and confusion matrix", _class_tables(page, record))
    else:
        page.add("curves", "Segmentation", _segmentation_figures(page, record, curves))
    page.add("subgroups", "Subgroups", _subgroups(record))
    page.add("overlap", "Overlap with training", _overlap(record))
    page.add("data", "Data and bundle", _data(record))
    from mednas._versions import package_version

    mednas_version = package_version("mednas") or "?"
    b = record["bundle"]
    nav = "".join(f"<a href='#{sid}'>{_e(title)}</a>" for sid, title, _ in page.sections)
    body = "\n".join(
        f"<section id='{sid}'>{'' if sid == 'overview' else f'<h2>{_e(title)}</h2>'}\n{content}</section>"
        for sid, title, content in page.sections
    )
    meta = {
        "figures": page.figure_ids,
        "images": 0,
        "population": record["population"],
        "promise": (record.get("operating_point") or {}).get("status"),
        "mednas": mednas_version,
    }
    return PAGE.format(
        version=_e(mednas_version),
        title=_e(f"mednas validation: {b.get('task')} on {record['data']['name']}"),
        css=CSS + _EXTRA_CSS,
        plotly=f'<script type="text/javascript">{get_plotlyjs()}</script>',
        brand="mednas external validation",
        subtitle=_e(f"{b.get('task')} bundle on {record['data']['name']}"),
        nav=nav,
        body=body,
        footer=(
            f"Written by mednas {_e(mednas_version)} on {time.strftime('%Y-%m-%d %H:%M')} by <code>mednas evaluate"
            "</code>. Cases are counted, never named.\nThis file needs no network: plotly.js "
            f"{_e(plotly.__version__)} is inline."
        ),
        meta=json.dumps(meta).replace("</", "<\\/"),
        sort_script=SORT_SCRIPT,
        scripts=_RESIZE,
    )


# --------------------------------------------------------------------------------------------- sections


def _overview(record: dict[str, Any]) -> str:
    b, d = record["bundle"], record["data"]
    out = [
        f"<h1>External validation of {_e(b.get('task'))}</h1>",
        f"<p class='lead'>Bundle <code>{_e(b['name'])}</code> ({_e(b.get('architecture'))}, "
        f"{_num(b.get('params'))} parameters, {_e(b.get('source_label') or b.get('source'))}) on "
        f"<strong>{_e(record['population'])}</strong>. Every interval is a 95% bootstrap interval over patients "
        f"({record['bootstrap']['n_resamples']} resamples).</p>",
    ]
    if b.get("source") == "proxy":
        out.append(
            "<div class='banner'><strong>PROXY CANDIDATE, NOT RETRAINED</strong>: short low-resolution proxy "
            "weights.</div>"
        )
    elif b.get("source") == "ladder":
        out.append(
            "<div class='banner'><strong>FULL-RESOLUTION LADDER CANDIDATE, NOT RETRAINED</strong>: trained at full "
            "resolution on the search's resolution ladder, one seed, no test-split evaluation.</div>"
        )
    op = record.get("operating_point")
    if op:
        cls, label = _STATUS_STYLE.get(op.get("status", ""), ("panel", "NO PROMISE"))
        would = op.get("would_meet_here") or {}
        beside = ""
        if would.get("threshold") is not None:
            beside = (
                f"<br>On these data the same rule would pick threshold <strong>{_num(would['threshold'], 4)}</strong> "
                f"(sensitivity {_num(would.get('sensitivity'))}, specificity {_num(would.get('specificity'))}) "
                f"instead of the bundle's {_num(op.get('threshold'), 4)}: shown for information, not applied."
            )
        out.append(
            f"<div class='{cls} promise' id='promise'><span class='status'>{label}</span>{_e(op.get('text'))}. "
            f"Operating threshold {_num(op.get('threshold'), 4)} ({_e(op.get('rule'))}, chosen on "
            f"{_e(op.get('chosen_on'))}).{beside}</div>"
        )
    cards = []
    keys = (
        (
            ("auroc", "AUROC"),
            ("auprc", "AUPRC"),
            ("sensitivity", "sensitivity"),
            ("specificity", "specificity"),
            ("accuracy", "accuracy"),
            ("balanced_accuracy", "balanced accuracy"),
            ("ece", "ECE"),
        )
        if b["problem"] == "classification"
        else (
            ("dice", "Dice"),
            ("lesion_sensitivity", "lesion sensitivity"),
            ("false_positive_lesions_per_case", "false-positive lesions / case"),
            ("lesion_dice", "lesion-wise Dice"),
        )
    )
    for key, label in keys:
        m = record["metrics"].get(key)
        if m:
            lo, hi = (m.get("ci95") or [None, None])[:2]
            ci = f"95% CI {lo:.3f}-{hi:.3f}" if lo is not None and hi is not None else "no interval"
            cards.append(
                f"<div class='card'><div class='k'>{_e(label)}</div><div class='v'>{_num(m.get('value'))}</div>"
                f"<div class='s'>{ci}</div></div>"
            )
    out.append(f"<div class='cards'>{''.join(cards)}</div>")
    if d.get("n_failed"):
        out.append(
            f"<div class='note'>{d['n_failed']} case(s) got no answer (NaN or infinite output, or unreadable) "
            f"and are left out of every figure: {_e(json.dumps(record['failed']['reasons']))} (listed in failed.csv "
            "beside this file).</div>"
        )
    rows = [[_e(k), _ci(v)] for k, v in sorted(record["metrics"].items())]
    out.append("<h3>Every metric</h3>" + _table(["metric", "value [95% CI]"], rows))
    if b["problem"] == "classification":
        out.append(
            "<p class='s'>Sensitivity, specificity, PPV, NPV count the finding ("
            + _e(", ".join(b["findings"]))
            + ") at the bundle's locked threshold; accuracy and balanced accuracy compare the predicted class "
            "with the true class; AUROC, AUPRC, Brier score and ECE use the finding score.</p>"
        )
    return "\n".join(out)


def _classification_figures(page: _Page, record: dict[str, Any], curves: dict[str, Any]) -> str:
    """The classification figures: ROC and precision-recall curves, reliability diagram, confusion matrix."""
    out = []
    if len(set(curves["finding"])) == 2:
        out.append(_curve_figures(page, record, curves))
    else:
        out.append(
            "<div class='panel'>ROC and precision-recall curves need cases with and without the finding.</div>"
        )
    out.append(_calibration_and_confusion(page, record))
    return "\n".join(out)


def _locked_point(record: dict[str, Any]) -> dict[str, Any]:
    """The bundle's locked operating point as measured on this data (from the finding confusion matrix)."""
    m = record["metrics"]
    (tn, fp), (fn, tp) = record["finding_confusion"]["matrix"]
    op = record.get("operating_point") or {}
    return {
        "threshold": op.get("threshold") if op.get("threshold") is not None else float("nan"),
        "sensitivity": tp / max(1, tp + fn),
        "specificity": tn / max(1, tn + fp),
        "precision": tp / (tp + fp) if tp + fp else None,
        "sensitivity_ci": (m.get("sensitivity") or {}).get("ci95"),
        "specificity_ci": (m.get("specificity") or {}).get("ci95"),
    }


def _curve_figures(page: _Page, record: dict[str, Any], curves: dict[str, Any]) -> str:
    """ROC and precision-recall curves of the finding score with their bands and the locked operating point."""
    from mednas.reporting import _curves as C
    from mednas.reporting import _figures as F

    finding, scores, patients = curves["finding"], curves["score"], curves["patients"]
    m = record["metrics"]
    point = _locked_point(record)
    band, prb = C.roc_band(finding, scores, patients), C.pr_band(finding, scores, patients)
    au, ap = m.get("auroc") or {}, m.get("auprc") or {}
    roc = {
        "label": "this data",
        "band": band,
        "operating_point": point,
        "auroc": (au.get("value", band.area), au.get("ci95") or list(band.area_ci)),
    }
    pr = {
        "label": "this data",
        "band": prb,
        "operating_point": point,
        "auprc": (ap.get("value", prb.area), ap.get("ci95") or list(prb.area_ci)),
    }
    return "\n".join(
        [
            "<div class='grid2'>",
            page.figure(
                "roc",
                F.roc_figure([roc]),
                "ROC curve of the finding score with its 95% band (patient bootstrap); the star is the "
                "bundle's locked operating point with its intervals.",
            ),
            page.figure(
                "pr",
                F.pr_figure([pr]),
                "Precision-recall curve with its 95% band; dotted: no skill (the prevalence here).",
            ),
            "</div>",
        ]
    )


def _calibration_and_confusion(page: _Page, record: dict[str, Any]) -> str:
    """The reliability diagram (when any bin has cases) and the confusion matrix at the locked threshold."""
    import numpy as np

    from mednas.reporting import _figures as F

    cal = record["calibration"]
    out = ["<div class='grid2'>"]
    if cal["bins"]:
        out.append(
            page.figure(
                "calibration",
                F.calibration_figure([{"label": "this data", "bins": cal["bins"]}]),
                f"Reliability diagram: observed finding rate per bin of the finding score ({cal['n_bins']} "
                f"equal-width bins; Wilson 95% intervals). ECE {_ci(cal.get('ece'))}.",
            )
        )
    conf = record["confusion"]
    out.append(
        page.figure(
            "confusion",
            F.confusion_figure(
                np.asarray(conf["matrix"]),
                labels=conf["labels"],
                threshold=(record.get("operating_point") or {}).get("threshold"),
            ),
            "Confusion matrix at the bundle's locked operating point (rows: true class; columns: predicted).",
        )
    )
    out.append("</div>")
    return "\n".join(out)


def _class_tables(page: _Page, record: dict[str, Any]) -> str:
    rows = [
        [_e(c["class"]), str(c["n"]), str(c["n_called"]), _ci(c["sensitivity"]), _ci(c["ppv"])]
        for c in record["per_class"]
    ]
    conf = record["confusion"]
    crow = [
        [f"<strong>{_e(conf['labels'][i])}</strong>", *[str(v) for v in r]]
        for i, r in enumerate(conf["matrix"])
    ]
    return (
        f"<p class='lead'>Data: {_e(page.population)}.</p>"
        + _table(
            ["class", "cases", "called", "sensitivity (recall) [95% CI]", "PPV (precision) [95% CI]"], rows
        )
        + "<h3>Confusion matrix (counts; rows true, columns predicted)</h3>"
        + _table(["true \\ predicted", *conf["labels"]], crow)
    )


def _segmentation_figures(page: _Page, record: dict[str, Any], curves: dict[str, Any]) -> str:
    from mednas.reporting import _figures as F

    dice = record["metrics"].get("dice") or {}
    fig = F.dice_figure(
        [
            {
                "label": "this data",
                "values": curves["dice"],
                "cases": [f"case {i + 1}" for i in range(len(curves["dice"]))],
                "mean": dice.get("value"),
                "ci95": dice.get("ci95"),
            }
        ]
    )
    les = record.get("lesions") or {}
    rows = [[_e(c["class"]), _ci(c["dice"])] for c in record.get("per_class") or []]
    return (
        page.figure(
            "dice",
            fig,
            f"Dice per case (finding classes as one region); the diamond is the mean with its "
            f"95% interval. Lesions: {les.get('detected', 0)} of {les.get('n', 0)} detected "
            f"(rule {_e(record.get('lesion_overlap_rule'))}), {les.get('false_positives', 0)} "
            "false-positive lesions.",
        )
        + "<h3>Dice per class</h3>"
        + _table(["class", "Dice [95% CI]"], rows)
    )


def _subgroups(record: dict[str, Any]) -> str:
    sub = record["subgroups"]
    if not sub["rows"]:
        return (
            "<div class='panel'>The data carry no population attribute to break results down by (a CSV column or "
            "datalist field such as sex, site or scanner; PatientSex, Manufacturer or ManufacturerModelName for "
            "DICOM images).</div>"
        )
    cls = record["bundle"]["problem"] == "classification"
    names = (
        ["auroc", "sensitivity", "specificity", "accuracy", "balanced_accuracy"]
        if cls
        else ["dice", "lesion_sensitivity", "false_positive_lesions_per_case"]
    )
    rows = []
    for r in sub["rows"]:
        m = r.get("metrics") or {}
        cells = [_e(r["attribute"]), _e(r["value"]), str(r["n"]), str(r["n_patients"])]
        if cls:
            cells.append(str(r.get("n_finding", "")))
        cells += [_ci(m.get(k)) if m else _e(r.get("note", "")) for k in names]
        rows.append(cells)
    head = ["attribute", "value", "cases", "patients", *(["with finding"] if cls else []), *names]
    return (
        f"<p class='lead'>Data: {_e(record['population'])}. Groups under {sub['min_group']} cases show counts only.</p>"
        + _table(head, rows, sortable=True)
    )


def _overlap(record: dict[str, Any]) -> str:
    o = record["overlap"]
    cls = "banner" if o.get("seen_in_training") else "panel"
    extra = (
        f" The bundle recorded {o['training_images']} training and {o['validation_images']} validation image "
        "hashes."
        if o.get("recorded")
        else ""
    )
    dup = (
        f" {o['duplicates_within']} evaluation image(s) repeat another in this data."
        if o.get("duplicates_within")
        else ""
    )
    return (
        f"<div class='{cls}'>{_e(o['text'])}.{extra}{dup}</div>"
        f"<p class='s'>Compared by content ({_e(o['method'])}); no identifier is stored or compared.</p>"
    )


def _data(record: dict[str, Any]) -> str:
    d, b = record["data"], record["bundle"]
    splits = ", ".join(f"{k} {v}" for k, v in (d.get("splits_present") or {}).items()) or "none recorded"
    rows = [
        ["data", _e(d["name"])],
        ["layout", _e(d["layout"])],
        ["split filter", _e(d.get("split") or "none")],
        ["splits in the data", _e(splits)],
        ["labelled cases listed", str(d["n_listed"])],
        ["cases selected", str(d["n_selected"])],
        ["cases evaluated", str(d["n_cases"])],
        ["patients evaluated", str(d["n_patients"])],
        ["cases failed", str(d["n_failed"])],
    ]
    if d.get("class_counts"):
        rows.append(["cases per class", _e(", ".join(f"{k} {v}" for k, v in d["class_counts"].items()))])
    rows += [
        [
            "bundle digest",
            f"<code>{_e(b.get('digest'))}</code>"
            + (" (pinned)" if b.get("digest_pinned") else " (not pinned)"),
        ],
        ["signature", "verified" if b.get("signature_verified") else "not checked"],
        ["source", _e(b.get("source_label") or b.get("source"))],
        ["backend", _e(b.get("backend"))],
    ]
    return _table(["", ""], rows)
