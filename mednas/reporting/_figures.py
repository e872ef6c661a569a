"""Plotly figures of the report, built from plain numbers (run-directory records and :mod:`._curves` results).

Each function returns a ``plotly.graph_objects.Figure`` with at least one trace holding data; the report
renders a text panel instead of calling a function that would have nothing to draw. Intervals are drawn
wherever the numbers have one: error bars for 95% bootstrap intervals, shaded bands for curves.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "calibration_figure",
    "confusion_figure",
    "dice_figure",
    "fidelity_figure",
    "history_figure",
    "importance_figure",
    "ladder_figure",
    "lesion_size_figure",
    "pareto_figure",
    "pr_figure",
    "roc_figure",
]

BLUE, GREEN, RED, ORANGE, GREY, PURPLE = "#1f6fb4", "#2a9d3f", "#d62728", "#e67e22", "#9aa0a6", "#7b3fa0"
CURVE_COLOURS = (BLUE, ORANGE, PURPLE, GREEN)


def _go() -> Any:
    import plotly.graph_objects as go

    return go


def _layout(
    fig: Any,
    *,
    height: int = 380,
    xtitle: str = "",
    ytitle: str = "",
    legend: bool = True,
    legend_inside: str | None = None,
) -> Any:
    """Apply the report's look; ``legend_inside`` ("bottom right", "top left", ...) puts the legend on the plot."""
    legend_pos: dict[str, Any] = {
        "orientation": "h",
        "yanchor": "bottom",
        "y": 1.02,
        "xanchor": "left",
        "x": 0,
    }
    if legend_inside:
        vert, horiz = legend_inside.split()
        legend_pos = {
            "orientation": "v",
            "yanchor": vert,
            "y": 0.02 if vert == "bottom" else 0.98,
            "xanchor": horiz,
            "x": 0.98 if horiz == "right" else 0.02,
            "bgcolor": "rgba(255,255,255,0.85)",
            "bordercolor": "#dde1e7",
            "borderwidth": 1,
        }
    fig.update_layout(
        template="plotly_white",
        height=height,
        margin={"l": 60, "r": 20, "t": 30, "b": 50},
        font={"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12},
        showlegend=legend,
        legend=legend_pos,
        hoverlabel={"namelength": -1},
    )
    if xtitle:
        fig.update_xaxes(title_text=xtitle)
    if ytitle:
        fig.update_yaxes(title_text=ytitle)
    return fig


def _err(values: Sequence[float | None], cis: Sequence[Sequence[float] | None]) -> dict[str, Any] | None:
    """Asymmetric error bars from 95% intervals; None when no point has one."""
    plus, minus, any_ci = [], [], False
    for v, ci in zip(values, cis):
        if v is not None and ci and ci[0] is not None and ci[1] is not None and all(map(math.isfinite, ci)):
            plus.append(max(0.0, ci[1] - v))
            minus.append(max(0.0, v - ci[0]))
            any_ci = True
        else:
            plus.append(0.0)
            minus.append(0.0)
    if not any_ci:
        return None
    return {
        "type": "data",
        "symmetric": False,
        "array": plus,
        "arrayminus": minus,
        "thickness": 1,
        "width": 3,
        "color": "rgba(60,60,60,0.45)",
    }


def _ci_text(ci: Sequence[float] | None) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return ""
    return f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})"


# ------------------------------------------------------------------------------------------ search


def history_figure(points: list[dict[str, Any]], *, name: str, maximize: bool) -> Any:
    """Objective per trial in trial order, the best-so-far line, and every state marked.

    Args:
        points: One per trial: ``trial``, ``state`` (complete, pruned, infeasible, failed, running), ``value``
            (complete: the objective; pruned: the last intermediate value), ``ci95``, ``learned``, ``feasible``,
            ``family``, ``params``, ``reason``, ``duplicate_of``.
        name: Objective name (axis title).
        maximize: Direction of the (primary) objective.
    """
    go = _go()
    fig = go.Figure()
    finite = [p["value"] for p in points if p.get("value") is not None and math.isfinite(p["value"])]
    floor = min(finite) if finite else 0.0
    span = (max(finite) - floor) if finite else 1.0
    bottom = floor - 0.06 * (span or 1.0)

    def hover(p: dict[str, Any]) -> str:
        bits = [f"trial {p['trial']} ({p['state']})", p.get("family") or ""]
        if p.get("params"):
            bits.append(f"{p['params']:,} parameters")
        if p.get("value") is not None:
            bits.append(f"{name} {p['value']:.4f}{_ci_text(p.get('ci95'))}")
        if p.get("duplicate_of") is not None:
            bits.append(f"same candidate as trial {p['duplicate_of']}")
        if p.get("reason"):
            bits.append(str(p["reason"])[:160])
        return "<br>".join(b for b in bits if b)

    _add_valued_traces(fig, points, hover)
    _add_bottom_traces(fig, points, bottom, hover)
    best_x, best_y = _best_so_far(points, maximize)
    if best_x:
        fig.add_trace(
            go.Scatter(
                x=best_x,
                y=best_y,
                mode="lines",
                name="best so far",
                line={"color": GREEN, "width": 2, "shape": "hv"},
                hoverinfo="skip",
            )
        )
    _layout(fig, xtitle="trial", ytitle=name)
    if len(points) <= 20:
        fig.update_xaxes(dtick=1)
    return fig


#: The history plot's trials that have a value, by kind: (legend label, which points, marker).
_VALUED_GROUPS: tuple[tuple[str, Callable[[dict[str, Any]], bool], dict[str, Any]], ...] = (
    (
        "complete",
        lambda p: (
            p["state"] == "complete" and p.get("learned") is not False and p.get("feasible") is not False
        ),
        {"color": BLUE, "size": 8, "symbol": "circle"},
    ),
    (
        "complete, never started learning",
        lambda p: p["state"] == "complete" and p.get("learned") is False,
        {"color": BLUE, "size": 8, "symbol": "circle-open"},
    ),
    (
        "complete, violates a constraint",
        lambda p: p["state"] == "complete" and p.get("feasible") is False and p.get("learned") is not False,
        {"color": ORANGE, "size": 9, "symbol": "diamond"},
    ),
    (
        "pruned (last value)",
        lambda p: p["state"] == "pruned",
        {"color": GREY, "size": 7, "symbol": "circle"},
    ),
)


def _add_valued_traces(
    fig: Any, points: list[dict[str, Any]], hover: Callable[[dict[str, Any]], str]
) -> None:
    """One marker trace per kind of trial that has a value (complete ones with their 95% error bars)."""
    go = _go()
    for label, keep, marker in _VALUED_GROUPS:
        sel = [p for p in points if keep(p) and p.get("value") is not None]
        if not sel:
            continue
        values = [p["value"] for p in sel]
        fig.add_trace(
            go.Scatter(
                x=[p["trial"] for p in sel],
                y=values,
                mode="markers",
                name=label,
                marker=marker,
                error_y=_err(values, [p.get("ci95") for p in sel]) if label == "complete" else None,
                hovertext=[hover(p) for p in sel],
                hoverinfo="text",
            )
        )


def _add_bottom_traces(
    fig: Any, points: list[dict[str, Any]], bottom: float, hover: Callable[[dict[str, Any]], str]
) -> None:
    """Trials without a value along the bottom: pruned without one, infeasible, failed and running ones."""
    go = _go()
    unvalued = [p for p in points if p["state"] == "pruned" and p.get("value") is None]
    rows = [  # e.g. multi-objective studies, whose pruned trials report no intermediate value to Optuna
        (
            "pruned (no value recorded)",
            unvalued,
            {"color": GREY, "size": 7, "symbol": "triangle-down"},
        )
    ]
    for label, state, marker in (
        ("infeasible (not trained)", "infeasible", {"color": RED, "size": 9, "symbol": "x"}),
        ("failed", "failed", {"color": "#222", "size": 9, "symbol": "x-thin-open"}),
        ("running", "running", {"color": GREEN, "size": 9, "symbol": "hourglass"}),
    ):
        rows.append((label, [p for p in points if p["state"] == state], marker))
    for label, sel, marker in rows:
        if sel:
            fig.add_trace(
                go.Scatter(
                    x=[p["trial"] for p in sel],
                    y=[bottom] * len(sel),
                    mode="markers",
                    name=label,
                    marker=marker,
                    hovertext=[hover(p) for p in sel],
                    hoverinfo="text",
                )
            )


def _best_so_far(points: list[dict[str, Any]], maximize: bool) -> tuple[list[int], list[float]]:
    """The best objective of the complete, learning, feasible trials up to each trial (from the first one)."""
    best_x, best_y, best = [], [], None
    for p in sorted(points, key=lambda q: q["trial"]):
        counts = (
            p["state"] == "complete"
            and p.get("value") is not None
            and p.get("learned") is not False
            and p.get("feasible") is not False
        )
        if counts and (best is None or (p["value"] > best if maximize else p["value"] < best)):
            best = p["value"]
        if best is not None:
            best_x.append(p["trial"])
            best_y.append(best)
    return best_x, best_y


def pareto_figure(
    points: list[dict[str, Any]],
    front: Sequence[int],
    names: Sequence[str],
    directions: Sequence[str],
    labels: Sequence[str] | None = None,
) -> Any:
    """Primary objective against each secondary one; the Pareto front highlighted and joined.

    Args:
        points: Complete trials: ``trial``, ``values`` (one per objective), ``ci95`` (of the primary), ``family``.
        front: Trial numbers on the front (``summary["pareto_front"]``).
        names: Objective names, primary first.
        directions: ``maximize``/``minimize`` per objective.
        labels: Axis titles per objective (default: ``names``), e.g. ``latency_ms (onnxruntime fp32, 1 thread,
            AMD EPYC)``.
    """
    labels = list(labels) if labels is not None else list(names)
    go = _go()
    from plotly.subplots import make_subplots

    k = len(names) - 1
    fig = make_subplots(rows=1, cols=k, shared_yaxes=True, horizontal_spacing=0.06)
    on = set(front)
    for j in range(1, len(names)):
        xs_all = [p["values"][j] for p in points]
        for label, keep, marker in (
            ("other trials", lambda p: p["trial"] not in on, {"color": GREY, "size": 7}),
            ("Pareto front", lambda p: p["trial"] in on, {"color": RED, "size": 10, "symbol": "star"}),
        ):
            sel = [p for p in points if keep(p)]
            if not sel:
                continue
            ys = [p["values"][0] for p in sel]
            fig.add_trace(
                go.Scatter(
                    x=[p["values"][j] for p in sel],
                    y=ys,
                    mode="markers",
                    name=label,
                    marker=marker,
                    legendgroup=label,
                    showlegend=j == 1,
                    error_y=_err(ys, [p.get("ci95") for p in sel]) if label == "Pareto front" else None,
                    hovertext=[
                        f"trial {p['trial']} ({p.get('family') or ''})<br>{names[0]} {p['values'][0]:.4f}"
                        f"{_ci_text(p.get('ci95'))}<br>{names[j]} {p['values'][j]:.4g}"
                        for p in sel
                    ],
                    hoverinfo="text",
                ),
                row=1,
                col=j,
            )
        line = sorted((p for p in points if p["trial"] in on), key=lambda p: p["values"][j])
        if len(line) > 1:
            fig.add_trace(
                go.Scatter(
                    x=[p["values"][j] for p in line],
                    y=[p["values"][0] for p in line],
                    mode="lines",
                    line={"color": RED, "width": 1, "dash": "dot"},
                    showlegend=False,
                    hoverinfo="skip",
                ),
                row=1,
                col=j,
            )
        positive = [x for x in xs_all if x is not None and x > 0]
        if positive and len(positive) == len(xs_all) and max(positive) / min(positive) > 100:
            fig.update_xaxes(type="log", row=1, col=j)
        fig.update_xaxes(
            title_text=f"{labels[j]}, {'higher' if directions[j] == 'maximize' else 'lower'} is better",
            row=1,
            col=j,
        )
    fig.update_yaxes(title_text=names[0], row=1, col=1)
    _layout(fig, height=400)
    return fig


def importance_figure(importances: dict[str, dict[str, float]]) -> Any:
    """Horizontal bars of parameter importances, one panel per scope (all trials, each family)."""
    go = _go()
    from plotly.subplots import make_subplots

    scopes = [s for s in importances if importances[s]]
    fig = make_subplots(rows=1, cols=len(scopes), subplot_titles=scopes, horizontal_spacing=0.18)
    longest = 1
    for i, scope in enumerate(scopes, start=1):
        items = sorted(importances[scope].items(), key=lambda kv: kv[1])
        longest = max(longest, len(items))
        fig.add_trace(
            go.Bar(
                x=[v for _, v in items],
                y=[k for k, _ in items],
                orientation="h",
                name=scope,
                marker={"color": CURVE_COLOURS[(i - 1) % len(CURVE_COLOURS)]},
                hovertemplate="%{y}: %{x:.3f}<extra>" + scope + "</extra>",
            ),
            row=1,
            col=i,
        )
        fig.update_xaxes(title_text="importance (fANOVA)", range=[0, 1], row=1, col=i)
    _layout(fig, height=max(260, 60 + 22 * longest), legend=False)
    fig.update_layout(margin={"l": 150, "t": 50})
    return fig


def _inherited_text(climb: dict[str, Any]) -> str:
    """``<br>from trial 3, 72% inherited`` for a candidate that started from another's weights, else ``""``."""
    if climb.get("parent") is None:
        return ""
    fraction = climb.get("inherited_fraction")
    share = f", {fraction:.0%} inherited" if isinstance(fraction, int | float) else ""
    return f"<br>from trial {climb['parent']}{share}"


def ladder_figure(
    climbs: list[dict[str, Any]], rungs: list[dict[str, Any]], *, name: str, maximize: bool
) -> Any:
    """Candidates climbing the resolution ladder: each trial's objective at the end of every rung it completed.

    Trials stopped below the top rung (pruned at a rung's end, or failed) are grey; the survivors that completed
    the top (full-resolution) rung are coloured, the best of them in green.

    Args:
        climbs: One per trial with at least one rung value: ``trial``, ``values`` (the primary objective at each
            completed rung, rung 0 first), ``top`` (completed the top rung), ``state``, ``family``, ``seconds``
            and ``voxel_epochs`` (compute spent over its rungs).
        rungs: The ladder's rungs, lowest first: ``shape``, ``epochs``.
        name: Objective name (axis title).
        maximize: Direction of the (primary) objective.
    """
    go = _go()
    fig = go.Figure()
    survivors = [c for c in climbs if c.get("top") and c["values"] and c["values"][-1] is not None]
    sign = 1.0 if maximize else -1.0
    best = max(survivors, key=lambda c: sign * c["values"][-1])["trial"] if survivors else None
    shown: set[str] = set()
    # Grey first, so the survivors' lines are drawn over the pruned ones.
    for c in sorted(climbs, key=lambda c: (bool(c.get("top")), c["trial"] == best)):
        group = (
            "best survivor"
            if c["trial"] == best
            else "top-rung survivor"
            if c.get("top")
            else "stopped below the top"
        )
        colour = {"best survivor": GREEN, "top-rung survivor": BLUE}.get(group, GREY)
        xs = list(range(len(c["values"])))
        hover = [
            f"trial {c['trial']} ({c.get('family') or ''}, {c.get('state')})<br>rung {k} "
            f"({'x'.join(map(str, (rungs[k] if k < len(rungs) else {}).get('shape') or []))}): "
            + ("n/a" if v is None else f"{name} {v:.4f}")
            + _inherited_text(c)
            for k, v in zip(xs, c["values"])
        ]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=c["values"],
                mode="lines+markers",
                name=group,
                legendgroup=group,
                showlegend=group not in shown,
                line={"color": colour, "width": 3 if group == "best survivor" else 2 if c.get("top") else 1},
                marker={"color": colour, "size": 8 if c.get("top") else 5},
                opacity=1.0 if c.get("top") else 0.55,
                hovertext=hover,
                hoverinfo="text",
            )
        )
        shown.add(group)
    _layout(fig, xtitle="rung (input shape, epochs)", ytitle=name)
    fig.update_xaxes(
        tickmode="array",
        tickvals=list(range(len(rungs))),
        ticktext=[
            f"{k}: {'x'.join(map(str, r.get('shape') or []))}<br>{r.get('epochs')} epoch{'' if r.get('epochs') == 1 else 's'}"
            for k, r in enumerate(rungs)
        ],
        range=[-0.3, max(len(rungs) - 1, 1) + 0.3],
    )
    return fig


def fidelity_figure(points: list[dict[str, Any]], *, name: str) -> Any:
    """Proxy objective against the full-fidelity validation objective of each retrained candidate.

    Args:
        points: ``trial``, ``proxy``, ``proxy_ci``, ``full``, ``full_ci``, ``test``, ``test_ci``, ``learned``.
        name: Objective name.
    """
    go = _go()
    fig = go.Figure()
    sel = [p for p in points if p.get("full") is not None and p.get("proxy") is not None]
    xs, ys = [p["proxy"] for p in sel], [p["full"] for p in sel]
    lo = min(xs + ys) if sel else 0.0
    hi = max(xs + ys) if sel else 1.0
    pad = 0.05 * ((hi - lo) or 1.0)
    fig.add_trace(
        go.Scatter(
            x=[lo - pad, hi + pad],
            y=[lo - pad, hi + pad],
            mode="lines",
            name="proxy = full",
            line={"color": GREY, "dash": "dash", "width": 1},
            hoverinfo="skip",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=ys,
            mode="markers+text",
            name="validation, full fidelity",
            text=[str(p["trial"]) for p in sel],
            textposition="top center",
            marker={"color": [BLUE if p.get("learned") is not False else GREY for p in sel], "size": 10},
            error_y=_err(ys, [p.get("full_ci") for p in sel]),
            error_x=_err(xs, [p.get("proxy_ci") for p in sel]),
            hovertext=[
                f"trial {p['trial']} ({p.get('family') or ''})<br>proxy {p['proxy']:.4f}{_ci_text(p.get('proxy_ci'))}"
                f"<br>full (validation) {p['full']:.4f}{_ci_text(p.get('full_ci'))}"
                + (
                    f"<br>test {p['test']:.4f}{_ci_text(p.get('test_ci'))}"
                    if p.get("test") is not None
                    else ""
                )
                + ("" if p.get("learned") is not False else "<br>never started learning: not ranked")
                for p in sel
            ],
            hoverinfo="text",
        )
    )
    tests = [p for p in sel if p.get("test") is not None]
    if tests:
        ts = [p["test"] for p in tests]
        fig.add_trace(
            go.Scatter(
                x=[p["proxy"] for p in tests],
                y=ts,
                mode="markers",
                name="test (at the validation threshold)",
                marker={"color": ORANGE, "size": 8, "symbol": "diamond-open"},
                error_y=_err(ts, [p.get("test_ci") for p in tests]),
                hovertext=[
                    f"trial {p['trial']}: test {p['test']:.4f}{_ci_text(p.get('test_ci'))}" for p in tests
                ],
                hoverinfo="text",
            )
        )
    _layout(fig, xtitle=f"proxy {name} (validation)", ytitle=f"full-fidelity {name}")
    return fig


# ------------------------------------------------------------------------------------------ classification


def roc_figure(curves: list[dict[str, Any]]) -> Any:
    """ROC curves with their 95% patient-bootstrap bands and operating points.

    Args:
        curves: ``label``, ``band`` (:class:`~mednas.reporting._curves.Band`), ``auroc`` (value, ci95),
            ``operating_point`` (``sensitivity``, ``specificity``, ``threshold``) or None.
    """
    go = _go()
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            name="chance",
            line={"color": GREY, "dash": "dash", "width": 1},
            hoverinfo="skip",
        )
    )
    for i, c in enumerate(curves):
        colour = CURVE_COLOURS[i % len(CURVE_COLOURS)]
        band = c["band"]
        _add_band(fig, band.x, band.low, band.high, colour, f"{c['label']}: 95% band")
        value, ci = c["auroc"]
        fig.add_trace(
            go.Scatter(
                x=band.curve_x,
                y=band.curve_y,
                mode="lines",
                line={"color": colour, "width": 2, "shape": "hv"},
                name=f"{c['label']}: AUROC {value:.3f}{_ci_text(ci)}",
                hovertemplate="FPR %{x:.3f}, sensitivity %{y:.3f}<extra></extra>",
            )
        )
        op = c.get("operating_point")
        if op and op.get("sensitivity") is not None and op.get("specificity") is not None:
            fig.add_trace(
                go.Scatter(
                    x=[1 - op["specificity"]],
                    y=[op["sensitivity"]],
                    mode="markers",
                    marker={
                        "color": colour,
                        "size": 13,
                        "symbol": "star",
                        "line": {"color": "#000", "width": 1},
                    },
                    name=f"{c['label']}: operating point ({op.get('threshold', float('nan')):.3f})",
                    showlegend=False,
                    error_y=_err([op["sensitivity"]], [op.get("sensitivity_ci")]),
                    error_x=_err(
                        [1 - op["specificity"]],
                        [[1 - op["specificity_ci"][1], 1 - op["specificity_ci"][0]]]
                        if op.get("specificity_ci")
                        else [None],
                    ),
                    hovertemplate=f"sensitivity {op['sensitivity']:.3f}, specificity {op['specificity']:.3f}<extra></extra>",
                )
            )
    _layout(
        fig,
        height=420,
        xtitle="1 - specificity (false-positive rate)",
        ytitle="sensitivity",
        legend_inside="bottom right",
    )
    fig.update_xaxes(range=[-0.01, 1.01])
    fig.update_yaxes(range=[-0.01, 1.02])
    return fig


def pr_figure(curves: list[dict[str, Any]]) -> Any:
    """Precision-recall curves with 95% bands, the no-skill line (prevalence) and the operating points."""
    go = _go()
    fig = go.Figure()
    for i, c in enumerate(curves):
        colour = CURVE_COLOURS[i % len(CURVE_COLOURS)]
        band = c["band"]
        prevalence = band.extra.get("prevalence")
        if prevalence is not None:
            fig.add_trace(
                go.Scatter(
                    x=[0, 1],
                    y=[prevalence, prevalence],
                    mode="lines",
                    name=f"{c['label']}: no skill (prevalence {prevalence:.2f})",
                    showlegend=False,
                    line={"color": colour, "dash": "dot", "width": 1},
                    hovertemplate=f"no skill: precision = prevalence {prevalence:.2f}<extra></extra>",
                )
            )
        _add_band(fig, band.x, band.low, band.high, colour, f"{c['label']}: 95% band")
        value, ci = c["auprc"]
        fig.add_trace(
            go.Scatter(
                x=band.curve_x,
                y=band.curve_y,
                mode="lines",
                line={"color": colour, "width": 2},
                name=f"{c['label']}: AUPRC {value:.3f}{_ci_text(ci)}",
                hovertemplate="recall %{x:.3f}, precision %{y:.3f}<extra></extra>",
            )
        )
        op = c.get("operating_point")
        if op and op.get("sensitivity") is not None and op.get("precision") is not None:
            fig.add_trace(
                go.Scatter(
                    x=[op["sensitivity"]],
                    y=[op["precision"]],
                    mode="markers",
                    marker={
                        "color": colour,
                        "size": 13,
                        "symbol": "star",
                        "line": {"color": "#000", "width": 1},
                    },
                    name=f"{c['label']}: operating point",
                    showlegend=False,
                    hovertemplate="operating point: recall %{x:.3f}, precision %{y:.3f}<extra></extra>",
                )
            )
    _layout(
        fig, height=420, xtitle="recall (sensitivity)", ytitle="precision (PPV)", legend_inside="bottom left"
    )
    fig.update_xaxes(range=[-0.01, 1.01])
    fig.update_yaxes(range=[-0.01, 1.02])
    return fig


def _add_band(fig: Any, x: np.ndarray, low: np.ndarray, high: np.ndarray, colour: str, name: str) -> None:
    go = _go()
    if not np.isfinite(low).any():
        return
    rgba = _rgba(colour, 0.18)
    fig.add_trace(
        go.Scatter(
            x=x, y=high, mode="lines", line={"width": 0}, showlegend=False, hoverinfo="skip", legendgroup=name
        )
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=low,
            mode="lines",
            line={"width": 0},
            fill="tonexty",
            fillcolor=rgba,
            name=name,
            hoverinfo="skip",
            legendgroup=name,
            showlegend=False,
        )
    )


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def calibration_figure(series: list[dict[str, Any]]) -> Any:
    """Reliability diagram: observed finding rate per predicted-probability bin, with Wilson 95% intervals.

    Args:
        series: ``label`` and ``bins`` (from :func:`~mednas.reporting._curves.calibration_bins`).
    """
    go = _go()
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            name="perfect calibration",
            line={"color": GREY, "dash": "dash", "width": 1},
            hoverinfo="skip",
        )
    )
    for i, s in enumerate(series):
        bins = s["bins"]
        ys = [b["observed"] for b in bins]
        fig.add_trace(
            go.Scatter(
                x=[b["mean_score"] for b in bins],
                y=ys,
                mode="lines+markers",
                name=s["label"],
                marker={
                    "color": CURVE_COLOURS[i % len(CURVE_COLOURS)],
                    "size": [6 + 10 * math.sqrt(b["n"] / max(bb["n"] for bb in bins)) for b in bins],
                },
                line={"color": CURVE_COLOURS[i % len(CURVE_COLOURS)], "width": 1},
                error_y=_err(ys, [b["ci95"] for b in bins]),
                hovertext=[
                    f"scores {b['low']:.1f}-{b['high']:.1f}: {b['n']} cases, mean score {b['mean_score']:.3f}, "
                    f"observed {b['observed']:.3f}{_ci_text(b['ci95'])}"
                    for b in bins
                ],
                hoverinfo="text",
            )
        )
    _layout(
        fig,
        height=400,
        xtitle="predicted finding probability (bin mean)",
        ytitle="observed finding rate",
        legend_inside="top left",
    )
    fig.update_xaxes(range=[-0.02, 1.02])
    fig.update_yaxes(range=[-0.02, 1.05])
    return fig


def confusion_figure(
    matrix: np.ndarray, *, labels: Sequence[str] = ("no finding", "finding"), threshold: float | None = None
) -> Any:
    """Confusion matrix heatmap: counts and the share of each true class (row)."""
    go = _go()
    m = np.asarray(matrix, dtype=float)
    rows = m.sum(axis=1, keepdims=True)
    share = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    text = [
        [f"{int(m[i, j])}<br>({share[i, j]:.0%} of {labels[i]})" for j in range(m.shape[1])]
        for i in range(m.shape[0])
    ]
    fig = go.Figure(
        go.Heatmap(
            z=share,
            x=[f"called {lab}" for lab in labels],
            y=[f"truly {lab}" for lab in labels],
            text=text,
            texttemplate="%{text}",
            colorscale="Blues",
            zmin=0,
            zmax=1,
            showscale=False,
            hovertemplate="%{y}, %{x}: %{text}<extra></extra>",
        )
    )
    _layout(fig, height=300 + 20 * max(0, len(labels) - 2), legend=False)
    fig.update_yaxes(autorange="reversed")
    if threshold is not None:
        fig.update_layout(title={"text": f"threshold {threshold:.4f}", "font": {"size": 12}, "x": 0.5})
    return fig


# ------------------------------------------------------------------------------------------ segmentation


def dice_figure(series: list[dict[str, Any]]) -> Any:
    """Per-case Dice as a box with every case, and the mean with its 95% patient-bootstrap interval.

    Args:
        series: ``label``, ``values`` (per case), ``cases`` (salted keys), ``mean`` and ``ci95``.
    """
    go = _go()
    fig = go.Figure()
    for i, s in enumerate(series):
        colour = CURVE_COLOURS[i % len(CURVE_COLOURS)]
        fig.add_trace(
            go.Box(
                y=s["values"],
                name=s["label"],
                boxpoints="all",
                jitter=0.4,
                pointpos=0,
                marker={"color": colour, "size": 6},
                line={"color": colour},
                text=s.get("cases"),
                hovertemplate="%{text}: Dice %{y:.3f}<extra></extra>",
            )
        )
        if s.get("mean") is not None:
            fig.add_trace(
                go.Scatter(
                    x=[s["label"]],
                    y=[s["mean"]],
                    mode="markers",
                    name=f"mean{_ci_text(s.get('ci95'))}",
                    marker={"color": "#000", "symbol": "diamond", "size": 10},
                    error_y=_err([s["mean"]], [s.get("ci95")]),
                    hovertemplate=f"mean Dice {s['mean']:.3f}{_ci_text(s.get('ci95'))}<extra></extra>",
                )
            )
    _layout(fig, height=380, ytitle="Dice per case (finding classes)")
    fig.update_yaxes(range=[-0.02, 1.02])
    return fig


def lesion_size_figure(bins: list[dict[str, Any]], lesions: list[dict[str, Any]]) -> Any:
    """Lesion detection sensitivity per size bin (with intervals), and each lesion's Dice against its size."""
    go = _go()
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.5, 0.5],
        horizontal_spacing=0.12,
        subplot_titles=("sensitivity by lesion size", "each lesion"),
    )
    labels = [
        (f"{b['low']:.0f}" if b["low"] == b["high"] else f"{b['low']:.0f}-{b['high']:.0f}")
        + f" vx (n={b['n_lesions']})"
        for b in bins
    ]
    sens = [b["sensitivity"] for b in bins]
    fig.add_trace(
        go.Bar(
            x=labels,
            y=sens,
            name="sensitivity",
            marker={"color": BLUE},
            error_y=_err(sens, [b["ci95"] for b in bins]),
            hovertext=[
                f"{b['n_detected']}/{b['n_lesions']} detected: {b['sensitivity']:.3f}{_ci_text(b['ci95'])}"
                for b in bins
            ],
            hoverinfo="text",
        ),
        row=1,
        col=1,
    )
    for label, found, colour in (("detected", True, GREEN), ("missed", False, RED)):
        sel = [le for le in lesions if bool(le["detected"]) is found]
        if sel:
            fig.add_trace(
                go.Scatter(
                    x=[le["size_voxels"] for le in sel],
                    y=[le.get("dice", 0.0) for le in sel],
                    mode="markers",
                    name=f"{label} lesion",
                    marker={"color": colour, "size": 7},
                    hovertemplate="size %{x} voxels, lesion Dice %{y:.3f}<extra>" + label + "</extra>",
                ),
                row=1,
                col=2,
            )
    fig.update_yaxes(title_text="lesion sensitivity", range=[0, 1.05], row=1, col=1)
    fig.update_xaxes(title_text="lesion size (voxels)", type="log", row=1, col=2)
    fig.update_yaxes(title_text="lesion Dice", range=[-0.02, 1.02], row=1, col=2)
    _layout(fig, height=420)
    fig.update_layout(margin={"t": 80}, legend={"y": 1.14})  # room for the legend above the panel titles
    return fig
