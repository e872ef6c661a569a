"""The report's page: one HTML file with its style and a few lines of script inline (plotly.js comes separately).

Kept as Python strings so the template ships inside the package without package-data settings.
"""

from __future__ import annotations

__all__ = ["CSS", "PAGE", "SORT_SCRIPT"]

CSS = """
:root { --fg: #1d2330; --muted: #5f6673; --line: #dde1e7; --bg: #ffffff; --panel: #f6f8fa; --accent: #1f6fb4;
        --warn-bg: #fff4e5; --warn-line: #e67e22; --sim-bg: #fdecea; --sim-line: #d62728; --ok: #2a9d3f; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: var(--bg);
       font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header.top { position: sticky; top: 0; z-index: 10; background: #fff; border-bottom: 1px solid var(--line);
             padding: 8px 24px; display: flex; gap: 18px; align-items: baseline; flex-wrap: wrap; }
header.top .brand { font-weight: 700; }
header.top nav a { margin-right: 12px; color: var(--accent); text-decoration: none; font-size: 13px; }
main { max-width: 1240px; margin: 0 auto; padding: 8px 24px 48px; }
h1 { font-size: 26px; margin: 18px 0 4px; }
h2 { font-size: 20px; margin: 36px 0 8px; padding-top: 8px; border-top: 2px solid var(--line); }
h3 { font-size: 16px; margin: 22px 0 6px; }
p.lead { color: var(--muted); margin-top: 0; }
.banner { border: 2px solid var(--sim-line); background: var(--sim-bg); padding: 10px 14px; border-radius: 6px;
          margin: 12px 0; font-size: 15px; }
.banner strong { letter-spacing: 0.04em; }
.note { border-left: 4px solid var(--warn-line); background: var(--warn-bg); padding: 8px 12px; margin: 10px 0;
        border-radius: 0 6px 6px 0; }
.panel { border: 1px dashed var(--line); background: var(--panel); padding: 12px 16px; border-radius: 6px; margin: 10px 0; }
.panel.error { border: 1px solid var(--sim-line); }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr)); gap: 12px; margin: 12px 0; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; background: #fff; }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: 0.04em; }
.card .v { font-size: 20px; font-weight: 600; }
.card .s { color: var(--muted); font-size: 12px; }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 16px; }
.grid2 > * { min-width: 0; }
figure.mednas-figure { min-width: 0; overflow: hidden; margin: 8px 0 16px; border: 1px solid var(--line); border-radius: 8px; padding: 6px; background: #fff; }
figure.mednas-figure figcaption { color: var(--muted); font-size: 12.5px; padding: 4px 8px 2px; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px 4px 0; text-align: left; vertical-align: top; }
th { color: var(--muted); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th:hover { color: var(--accent); }
.scroll { max-height: 520px; overflow: auto; border: 1px solid var(--line); border-radius: 6px; }
.scroll table { margin: 0; width: 100%; }
.scroll th { position: sticky; top: 0; background: #fff; }
tr.best td { background: #eef7ee; }
.state-complete { color: var(--ok); } .state-pruned { color: var(--muted); }
.state-infeasible, .state-failed { color: var(--sim-line); } .state-running { color: var(--accent); }
pre { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; overflow: auto;
      font-size: 12.5px; }
code { background: var(--panel); padding: 1px 4px; border-radius: 3px; font-size: 12.5px; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: 12px; }
.case { border: 1px solid var(--line); border-radius: 8px; padding: 8px; background: #fff; }
.case.wide { grid-column: 1 / -1; }
.case .row { display: flex; gap: 6px; flex-wrap: wrap; }
.case figure { margin: 0; text-align: center; }
.case img { width: 180px; height: auto; image-rendering: pixelated; display: block; border-radius: 3px; background: #000; }
.case figcaption, .case .caption { font-size: 12px; color: var(--muted); }
.legend-swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin: 0 4px 0 10px; vertical-align: middle; }
footer { color: var(--muted); font-size: 12px; border-top: 1px solid var(--line); padding: 14px 24px; text-align: center; }
@media print { header.top { position: static; } .scroll { max-height: none; } }
"""

SORT_SCRIPT = """
(function () {
  function key(cell) {
    var v = cell.getAttribute('data-sort');
    if (v === null) { v = cell.textContent.trim(); }
    var n = parseFloat(v);
    return isNaN(n) ? v.toLowerCase() : n;
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    table.querySelectorAll('th').forEach(function (th, col) {
      th.title = 'sort';
      th.addEventListener('click', function () {
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        var asc = th.getAttribute('data-dir') !== 'asc';
        table.querySelectorAll('th').forEach(function (h) { h.removeAttribute('data-dir'); });
        th.setAttribute('data-dir', asc ? 'asc' : 'desc');
        rows.sort(function (a, b) {
          var x = key(a.cells[col]), y = key(b.cells[col]);
          if (typeof x !== typeof y) { x = String(x); y = String(y); }
          return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
})();
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="mednas {version}">
<title>{title}</title>
<style>{css}</style>
{plotly}
</head>
<body>
<header class="top"><span class="brand">{brand}</span><span>{subtitle}</span><nav>{nav}</nav></header>
<main>
{body}
</main>
<footer>{footer}</footer>
<script type="application/json" id="mednas-report-meta">{meta}</script>
<script>{sort_script}</script>
{scripts}</body>
</html>
"""
