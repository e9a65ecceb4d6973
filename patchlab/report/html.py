"""One self-contained report.html (plots embedded as base64 PNG) that a researcher can send to a colleague."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from ..io import write_atomic

_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee}.warn{color:#a00}code{background:#f5f5f5}"""


def _num(x) -> str:
    if isinstance(x, float):
        return "—" if x != x else f"{x:.3f}"
    return html.escape(str(x))


def _track_rows(summary: dict) -> str:
    head = (
        "<tr><th>track</th><th>format</th><th>accuracy (last layer)</th><th>critical layer</th>"
        "<th>chance τ</th><th>S (audio share)</th><th>95% CI</th><th>Δ audio</th><th>Δ text</th></tr>"
    )
    rows = []
    for track, t in summary["tracks"].items():
        g = t.get("grounding", {})
        for fmt, lens in (t.get("lens") or {"—": {}}).items():
            rows.append(
                f"<tr><td>{track}</td><td>{fmt}</td><td>{_num(lens.get('accuracy_last_layer', float('nan')))}</td>"
                f"<td>{_num(lens.get('critical_layer', float('nan')))}</td>"
                f"<td>{_num(lens.get('chance_threshold', float('nan')))}</td>"
                f"<td>{_num(g.get('share', float('nan')))}</td>"
                f"<td>[{_num(g.get('share_lo', float('nan')))}, {_num(g.get('share_hi', float('nan')))}]</td>"
                f"<td>{_num(g.get('delta_audio', float('nan')))}</td>"
                f"<td>{_num(g.get('delta_text', float('nan')))}</td></tr>"
            )
    return f"<table>{head}{''.join(rows)}</table>"


def build_report(exp, summary: dict, figures: list[tuple[str, Path]], path: Path) -> Path:
    """Write the report: the question, the per-track table, each figure, and the full summary."""
    random = summary.get("random_weights")
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>patchlab: {html.escape(exp.name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(exp.name)}</h1><p>{html.escape(exp.description)}</p>",
        f"<p>model <code>{html.escape(exp.model)}</code>, data <code>{html.escape(exp.data)}</code>, tracks "
        f"{', '.join(exp.tracks)}, seed {exp.seed}{' (CI size)' if summary.get('small') else ''}.</p>",
        "<p class='warn'>RANDOM-WEIGHT model: plumbing only, numbers mean nothing.</p>" if random else "",
        "<h2>Does the model listen or guess?</h2>",
        _track_rows(summary),
    ]
    for track, t in summary["tracks"].items():
        if "listen_vs_guess" in t:
            lvg = t["listen_vs_guess"]
            parts.append(
                f"<p><b>{track}</b> with a conflicting text cue: follows the audio "
                f"{_num(lvg.get('conflict', {}).get('follows_audio', float('nan')))}, the cue "
                f"{_num(lvg.get('conflict', {}).get('follows_cue', float('nan')))}: {lvg['verdict']}.</p>"
            )
        if "enrichment" in t:
            e = t["enrichment"]
            parts.append(
                f"<p><b>{track}</b> enrichment {e['early']}→{e['deep']} c={e['c']}: held-out accuracy "
                f"{_num(e['heldout_accuracy_base'])} → {_num(e['heldout_accuracy_enriched'])}.</p>"
            )
    for row in summary.get("skipped", []):
        parts.append(
            f"<p class='warn'>skipped {html.escape(row['track'])}/{html.escape(str(row['sample']))}: "
            f"{html.escape(row['error'])} (fix: {html.escape(row['fix'])})</p>"
        )
    for title, fig in figures:
        data = base64.b64encode(Path(fig).read_bytes()).decode()
        parts.append(
            f"<h3>{html.escape(title)}</h3><img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>"
        )
    parts.append(f"<h2>Summary</h2><pre>{html.escape(json.dumps(summary, indent=1, default=str))}</pre></body></html>")
    return write_atomic(path, "\n".join(parts))
