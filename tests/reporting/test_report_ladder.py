"""The report of a resolution-ladder search (issue 17, item 4): candidates climbing the rungs, and the compute.

The ladder run is a copy of the session's live tiny classification search, its records rewritten to ladder form
through ``RunDir`` (``tests.bundle.test_export_ladder.ladder_run``); a flat run's report has neither part.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mednas.reporting import ReportResult, write_report
from mednas.rundir import RunDir
from tests.bundle.test_export_ladder import ladder_run
from tests.reporting.conftest import LiveRun, read_meta


def _figure_data(text: str, fid: str) -> list[dict]:
    """The traces of figure ``fid`` as the page embeds them (plotly's JSON inside the figure's div script)."""
    start = text.index(f'data-figure="{fid}"')
    script = text[start : text.index("</figure>", start)]
    match = re.search(r"Plotly\.newPlot\(\s*\"fig-" + re.escape(fid) + r"\",\s*(\[.*?\]),\s*\{", script, re.S)
    assert match, "figure data not found"
    return json.loads(match.group(1))


def test_report_of_a_ladder_search_draws_the_climb_and_the_compute(
    live_cls_run: LiveRun, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    made = ladder_run(live_cls_run.run_dir, run, survivors=2)
    assert len(made["survivors"]) == 2
    rd = RunDir(run)
    other = next(n for n in made["survivors"] if n != made["best"])
    rec = rd.trial(other)
    assert rec is not None
    rec.rungs[1]["start"] = "restarted"  # its weights could not run at rung 1's size
    rd.write_trial(rec)
    result: ReportResult = write_report(run, tmp_path / "report.html")
    assert result.errors == []
    assert "ladder" in result.figures and "history" in result.figures
    text = result.path.read_text()
    assert read_meta(text)["figures"] == result.figures
    assert "Candidates climbing the ladder" in text
    assert "at the highest rung it reached" in text

    traces = _figure_data(text, "ladder")
    climbed = {n: r for n, r in RunDir(run).trials().items() if getattr(r, "rungs", None)}
    assert len(traces) == len(climbed) >= 2
    by_trial = {int(re.match(r"trial (\d+)", t["hovertext"][0]).group(1)): t for t in traces}
    best = by_trial[made["best"]]
    # The survivor climbs every rung (x = rung index) with its recorded per-rung values, in colour.
    assert best["x"] == [0, 1, 2] and best["name"] == "best survivor"
    assert best["y"] == [r["value"] for r in climbed[made["best"]].rungs]
    assert best["line"]["color"] == "#2a9d3f"
    assert any(t["name"] == "stopped below the top" for t in traces)
    for n, t in by_trial.items():
        if n in made["survivors"] and n != made["best"]:
            assert (
                t["x"] == [0, 1, 2] and t["name"] == "top-rung survivor" and t["line"]["color"] == "#1f6fb4"
            )
        elif n != made["best"]:
            assert t["x"] == [0] and t["name"] == "stopped below the top"
            assert t["line"]["color"] == "#9aa0a6"  # greyed
    # Rungs are labelled with their shapes.
    assert "16x16" in text and "24x24" in text and "32x32" in text

    # The best trial's figures are named for where its weights come from: the top rung, not the proxy.
    assert (
        "climbed the resolution ladder to full resolution" in text and "trained only on the proxy" not in text
    )
    assert f"Best candidate: trial {made['best']} (top rung, full resolution, validation)" in text
    assert "validation (32x32: the top rung of the resolution ladder, not retrained)" in text

    # The trials table says how far each trial climbed, and where one had to start over.
    assert "ladder: reached rung 2 (32x32)" in text and "ladder: reached rung 0 (16x16)" in text
    assert text.count("restarted from fresh weights at rung 1") == 1

    c = made["compute"]
    share = c["pruned_voxel_epochs"] / c["voxel_epochs"]
    line = re.search(r"<p class='compute'>(.*?)</p>", text).group(1)
    assert "voxel-epochs in total" in line
    assert f"{share:.0%} of it spent on candidates later pruned" in line
    total = c["voxel_epochs"]
    assert (f"{total / 1e6:.3g} million" if total >= 1e6 else f"{total:,.0f}") in line


def test_report_of_a_flat_search_has_no_ladder(cls_report: ReportResult) -> None:
    text = cls_report.path.read_text()
    assert "ladder" not in cls_report.figures
    assert "Candidates climbing the ladder" not in text and "voxel-epochs" not in text
    assert "of each trial on the proxy" in text and "trained only on the proxy" in text
    assert "(proxy, validation)" in text and "the proxy trial, not retrained" in text
