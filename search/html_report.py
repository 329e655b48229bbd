"""`softprompt search report NAME --html out.html`: one static page a person can open (no
server, no script, nothing fetched): the trial table, the learning curves (inline SVG), the
designed prompts, the Table 3 evaluations logged for the campaign's ensembles, and the ensembles
the campaign built — what MLflow's UI does not show in one place.

Sections carry ids (`trials`, `curves`, `designed`, `table3`, `ensembles`); every table is a
plain `<table>` with a header row, so the page also parses as data.
"""

from __future__ import annotations

import html
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

from softprompt.store import Store
from softprompt.store.names import KIND_ENSEMBLE_EVAL, TAG_ENSEMBLE, TAG_KIND

from .baselines import BaselineScore, recorded_baselines
from .report import _COLUMNS, TrialRow, shown_columns, trial_rows
from .state import read_state

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
WIDTH, HEIGHT, MARGIN = 720, 360, 48
STYLE = ("body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:1em 0}"
         "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f3f3f3}"
         "td:first-child,th:first-child{text-align:left}")


def _table(table_id: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _score(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def curves_svg(rows: Sequence[TrialRow]) -> str:
    """Every trial's validation score against its step: one `<polyline>` per trial with a curve."""
    drawn = [row for row in rows if row.curve]
    if not drawn:
        return "<p>No evaluations yet.</p>"
    steps = [step for row in drawn for step, _ in row.curve]
    scores = [score for row in drawn for _, score in row.curve]
    low, high = min(scores), max(scores)
    high = high if high > low else low + 1
    last = max(steps) or 1

    def x(step: float) -> float:
        return MARGIN + (WIDTH - 2 * MARGIN) * step / last

    def y(score: float) -> float:
        return HEIGHT - MARGIN - (HEIGHT - 2 * MARGIN) * (score - low) / (high - low)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img">',
             f'<line x1="{MARGIN}" y1="{HEIGHT - MARGIN}" x2="{WIDTH - MARGIN}" y2="{HEIGHT - MARGIN}" stroke="#999"/>',
             f'<line x1="{MARGIN}" y1="{MARGIN}" x2="{MARGIN}" y2="{HEIGHT - MARGIN}" stroke="#999"/>',
             f'<text x="{WIDTH / 2}" y="{HEIGHT - 10}" text-anchor="middle">step (0 to {last})</text>',
             f'<text x="12" y="{MARGIN - 12}">score {_score(low)} to {_score(high)}</text>']
    for number, row in enumerate(drawn):
        color = PALETTE[number % len(PALETTE)]
        points = " ".join(f"{x(step):.1f},{y(score):.1f}" for step, score in row.curve)
        parts.append(f'<polyline data-trial="{html.escape(row.trial_id)}" fill="none" stroke="{color}" '
                     f'stroke-width="1.5" points="{points}"><title>{html.escape(row.trial_id)}</title></polyline>')
        parts.append(f'<text x="{WIDTH - MARGIN + 4}" y="{MARGIN + 14 * number}" fill="{color}" '
                     f'font-size="11">{html.escape(row.trial_id.rsplit("_", 1)[-1])}</text>')
    return "".join(parts) + "</svg>"


def table3_section(evaluations: Sequence[dict]) -> str:
    """Each logged Table 3 (`table3.json`): its members, average, best, ensembles and designed rows."""
    if not evaluations:
        return "<p>No ensemble of this campaign has been evaluated (`softprompt ensemble evaluate NAME`).</p>"
    sections = []
    for number, table in enumerate(evaluations):
        metric = table["metric"]
        rows = [(f"prompt {m['run_id'][:8]}", _score(m[metric])) for m in table["members"]]
        rows += [("average", _score(table["average"])), ("best prompt", _score(table["best"]))]
        rows += [(f"ensemble: {name}", _score(score)) for name, score in table["ensembles"].items()]
        rows += [(f"designed: {name}", _score(score)) for name, score in table.get("baselines", {}).items()]
        for kind, test in ((table.get("paired") or {}).get("against") or {}).items():
            rows.append((f"paired vs {kind}", f"{test['ensemble_only']} vs {test['rival_only']}, "
                                              f"p = {test['p_value']:.3g}"))
        sections.append(f"<h3>{html.escape(table.get('reference', ''))} ({table['examples']} examples)</h3>"
                        + _table(f"table3-{number}", ["row", metric], rows))
    return "".join(sections)


def ensembles_section(ensembles: Sequence[dict]) -> str:
    if not ensembles:
        return "<p>The campaign built no ensemble.</p>"
    parts = []
    for number, built in enumerate(ensembles):
        metric = built.get("metric", "score")
        promotion = built.get("promotion")
        note = "" if not promotion else f" — {'promoted' if promotion['promoted'] else 'not promoted'}"
        parts.append(f"<h3>{html.escape(built['name'])} version {html.escape(str(built['version']))} "
                     f"(alias {html.escape(str(built.get('alias')))}{html.escape(note)})</h3>")
        parts.append(_table(f"ensemble-{number}", ["member run", metric, "votes"],
                            [(m["run_id"], _score(m.get(metric)), m.get("votes", 1)) for m in built["members"]]))
        selection = built.get("selection") or {}
        if selection:
            parts.append(f"<pre>{html.escape(json.dumps(selection, indent=1, default=str))}</pre>")
    return "".join(parts)


def campaign_page(name: str, rows: Sequence[TrialRow], *, baselines: Sequence[BaselineScore] = (),
                  evaluations: Sequence[dict] = (), ensembles: Sequence[dict] = ()) -> str:
    """The whole page as one string."""
    columns = shown_columns(list(rows)) if rows else list(_COLUMNS)[:4]
    trials = _table("trials", columns, [[_COLUMNS[c](row) for c in columns] for row in rows])
    designed = (_table("designed", ["designed prompt", "task", "shots", "score"],
                       [(b.name, b.task, b.shots, _score(b.score)) for b in baselines]) if baselines
                else "<p>No designed prompt was scored.</p>")
    title = html.escape(f"campaign {name}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title><style>{STYLE}</style></head>"
            f"<body><h1>{title}</h1><p>{len(rows)} trials.</p>"
            f"<section id='trials'><h2>Trials</h2>{trials}</section>"
            f"<section id='curves'><h2>Learning curves (validation score)</h2>{curves_svg(rows)}</section>"
            f"<section id='designed'><h2>Designed prompts</h2>{designed}</section>"
            f"<section id='table3'><h2>Table 3</h2>{table3_section(evaluations)}</section>"
            f"<section id='ensembles'><h2>Ensembles built</h2>{ensembles_section(ensembles)}</section>"
            "</body></html>")


def logged_table3(store: Store, campaign: str) -> list[dict]:
    """The Table 3 evaluations logged in the campaign's experiment, oldest first (each with its
    `reference`)."""
    runs = store.runs_of(campaign, [f"tags.`{TAG_KIND}` = '{KIND_ENSEMBLE_EVAL}'"])
    tables = []
    with tempfile.TemporaryDirectory() as folder:
        for number, run in enumerate(sorted(runs, key=lambda r: r.start_time)):
            path = store.fetch_artifacts(f"{run.artifact_uri}/table3.json", Path(folder) / str(number))
            tables.append(json.loads(Path(path).read_text()) | {"reference": run.tags.get(TAG_ENSEMBLE, "")})
    return tables


def write_html_report(name: str, out: str | os.PathLike, *, folder: Path) -> Path:
    """Writes campaign `name`'s page (campaign folder `folder`) to `out`; returns its path."""
    stored = read_state(folder)
    store = Store(stored.tracking_uri)
    page = campaign_page(name, trial_rows(folder), baselines=recorded_baselines(name, store),
                         evaluations=logged_table3(store, name), ensembles=stored.ensembles)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path
