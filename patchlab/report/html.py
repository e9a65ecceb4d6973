"""One self-contained report.html (plots embedded as base64 PNG) that a researcher can send to a colleague.

It leads with the verdicts (each with effect, CI, p, Holm-corrected p and n), then says what they rest on
(clips per label, prompts, label set), then the headline numbers with intervals, then the figures.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from ..io import json_safe, write_atomic

_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;line-height:1.4}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
td.l,th.l{text-align:left}th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee}.warn{color:#a00}
code{background:#f5f5f5}.supported{color:#070;font-weight:bold}.refuted{color:#a00;font-weight:bold}
.inconclusive{color:#777}.negligible{color:#a60}.note{color:#555;font-size:90%}"""
_NAN = float("nan")


def _num(x, digits: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return "—" if x != x else f"{x:.{digits}f}"
    return html.escape(str(x))


def _ci(value, lo, hi, digits: int = 2) -> str:
    return f"{_num(value, digits)} <span class='note'>[{_num(lo, digits)}, {_num(hi, digits)}]</span>"


def _p(p) -> str:
    if p is None or p != p:
        return "—"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def _verdicts(summary: dict) -> str:
    rows = summary.get("verdicts", [])
    if not rows:
        return "<p>No hypothesis could be tested with these analyses.</p>"
    head = (
        "<tr><th class='l'>hypothesis</th><th>verdict</th><th>effect [95% CI]</th><th>smallest effect that matters"
        "</th><th>p</th><th>p (Holm)</th><th>n clips</th><th>clips for a verdict</th></tr>"
    )

    def row(r: dict) -> str:
        needed = r.get("n_needed")
        needed = f"{needed:.0f}" if isinstance(needed, (int, float)) and needed == needed else ""
        return (
            f"<tr><td class='l'>{html.escape(r['hypothesis'])}<br><span class='note'>{html.escape(r['test'])}"
            f"{'; ' + html.escape(r['note']) if r.get('note') else ''}</span></td>"
            f"<td class='{r['verdict']}'>{r['verdict']}</td><td>{_ci(r['effect'], r['ci_lo'], r['ci_hi'])}</td>"
            f"<td>{r.get('min_effect', 0):.3g}</td><td>{_p(r['p'])}</td><td>{_p(r['p_corrected'])}</td>"
            f"<td>{r['n']}</td><td>{needed}</td></tr>"
        )

    findings = [r for r in rows if r.get("kind", "finding") == "finding"]
    sanity = [r for r in rows if r.get("kind", "finding") != "finding"]
    out = f"<table>{head}{''.join(row(r) for r in findings)}</table>"
    if sanity:
        out += (
            "<h3>Sanity checks (true by construction on this model, not findings)</h3>"
            f"<table>{head}{''.join(row(r) for r in sanity)}</table>"
        )
    return out + (
        "<p class='note'>Convention: an effect points in the hypothesis' direction (&gt; 0 supports it) and its "
        "interval is two-sided at 95%; p is one-sided, in the hypothesis' direction. Supported: Holm-corrected p ≤ "
        "0.05 over the findings of this run and the CI clears the smallest effect that matters; refuted: the CI lies "
        "below 0; negligible: the CI lies within ± the smallest effect that matters; inconclusive otherwise, and "
        "always with fewer than 8 clips. Clips for a verdict: for an inconclusive finding, the clips at which the "
        "observed effect would give a decisive verdict with 80% power (normal approximation from the CI).</p>"
    )


def _code(text: str) -> str:
    return f"<code>{html.escape(text)}</code>"


def _rests_on(summary: dict) -> str:
    parts = []
    for track, r in summary.get("rests_on", {}).items():
        per_label = ", ".join(f"{k} {v}" for k, v in r["per_label"].items()) or "none"
        missing = sorted(set(r["labels"]) - set(r["per_label"]))
        gap = f" — <span class='warn'>no clip of {', '.join(missing)}</span>" if missing else ""
        items = []
        for fmt, p in r["prompts"].items():
            starts = f", answer starts {_code(p['answer_starts'])}" if p.get("answer_starts") else ""
            read = ", ".join(_code(v) for v in r["verbalized"][fmt])
            items.append(f"<li><b>{fmt}</b>: user turn {_code('<audio> ' + p.get('instruction', ''))}{starts}; "
                         f"labels read as {read}</li>")  # fmt: skip
        parts.append(
            f"<p><b>{track}</b>: {r['n_clips']} clips ({per_label}); label set: {', '.join(r['labels'])}{gap}.</p>"
            f"<ul>{''.join(items)}</ul>"
        )
    return "".join(parts)


_HEAD = [
    "track", "prompt", "n", "lens accuracy, final position, last layer [95% CI]",
    "balanced accuracy (label prior removed)",
    "critical layer, final position [95% CI]", "chance τ", "handover layer [95% CI]",
    "Δ audio at layer 0 [CI]", "Δ final at the last layer [CI]",
]  # fmt: skip


def _wins(layers: list | None) -> str:
    """A warning where one label is the lens argmax for nearly every clip (the score then measures the label mix)."""
    if not layers:
        return ""
    shown = ", ".join(map(str, layers[:8])) + (" ..." if len(layers) > 8 else "")
    return f"<br><span class='warn'>one label wins at layers {shown}</span>"


def _headline(summary: dict) -> str:
    head = "<tr>" + "".join(f"<th>{h}</th>" for h in _HEAD) + "</tr>"
    rows = []
    for track, t in summary["tracks"].items():
        g = t.get("grounding", {})
        first, last = g.get("first_layer", {}), g.get("last_layer", {})
        for fmt, lens in (t.get("lens") or {"—": {}}).items():
            cells = [
                track,
                fmt,
                lens.get("n_samples", g.get("n_samples", "—")),
                _ci(lens.get("accuracy_last_layer", _NAN), lens.get("accuracy_lo"), lens.get("accuracy_hi")),
                _num(lens.get("balanced_accuracy_last_layer", _NAN), 2) + _wins(lens.get("one_label_wins_layers")),
                _ci(lens.get("critical_layer", _NAN), lens.get("critical_layer_lo"), lens.get("critical_layer_hi"), 1),
                _num(lens.get("chance_threshold", _NAN), 2),
                _ci(g.get("handover_layer", _NAN), g.get("handover_lo"), g.get("handover_hi"), 0),
                _ci(first.get("delta_audio", _NAN), first.get("delta_audio_lo"), first.get("delta_audio_hi")),
                _ci(last.get("delta_final", _NAN), last.get("delta_final_lo"), last.get("delta_final_hi")),
            ]
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (
        f"<table>{head}{''.join(rows)}</table><p class='note'>Handover layer: the first layer from which patching the "
        "text positions restores more than patching the audio positions at every later layer. Δ: normalized "
        "restoration of the logit difference (0 = corrupted, 1 = clean), per layer, not averaged over layers. "
        "Intervals: Wilson for accuracy, percentile bootstrap over clips otherwise.</p>"
    )


def _enrichment(track: str, e: dict) -> str:
    if str(e["c"]) == "mean":
        edit = f"layer {e['deep']}'s input is replaced by its mean with layer {e['early']}'s input"
    else:
        edit = f"{e['c']} times layer {e['early']}'s input is added to layer {e['deep']}'s input"
    return (
        f"<p><b>{track}</b>, AudioLens' enrichment (training-free): at the final position, {edit}. The setting was "
        f"chosen among a grid on {e['search_samples']} clips and tested on {e['heldout_samples']} others: held-out "
        f"accuracy {_num(e['heldout_accuracy_base'], 2)} → {_num(e['heldout_accuracy_enriched'], 2)} (its test is "
        "among the verdicts).</p>"
    )


def build_report(exp, summary: dict, figures: list[tuple[str, Path]], path: Path) -> Path:
    """Write the report: verdicts, what they rest on, headline numbers with intervals, figures, the summary."""
    random = summary.get("random_weights")
    data_name = Path(exp.data).name or str(exp.data)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>patchlab: {html.escape(exp.name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(exp.name)}</h1><p>{html.escape(exp.description)}</p>",
        f"<p>model <code>{html.escape(Path(exp.model).name or exp.model)}</code>, data <code>{html.escape(data_name)}"
        f"</code>, tracks {', '.join(exp.tracks)}, seed {exp.seed}{' (CI size)' if summary.get('small') else ''}.</p>",
        "<p class='warn'>RANDOM-WEIGHT model: plumbing only, numbers mean nothing.</p>" if random else "",
        "<p class='warn'>Synthetic data from patchlab's own speech builder, the one patchlab-mini was trained on: "
        "its accuracy is no evidence about real speech. Point --data at SAKURA for that.</p>"
        if summary.get("synthetic_data")
        else "",
        "<h2>Verdicts</h2>",
        _verdicts(summary),
        "<h2>What they rest on</h2>",
        _rests_on(summary),
        "<h2>Headline numbers</h2>",
        _headline(summary),
    ]
    for track, t in summary["tracks"].items():
        if "listen_vs_guess" in t:
            lvg = t["listen_vs_guess"]
            conflict = lvg.get("conflict", {})
            parts.append(
                f"<p><b>{track}</b> with a conflicting text cue ({conflict.get('n', 0)} clips): follows the audio "
                f"{_num(conflict.get('follows_audio', _NAN), 2)}, the cue {_num(conflict.get('follows_cue', _NAN), 2)} "
                f"of the time: {html.escape(lvg['verdict'])} (p = {_p(lvg.get('p'))}).</p>"
            )
        if "enrichment" in t:
            parts.append(_enrichment(track, t["enrichment"]))
    for row in summary.get("skipped", []):
        parts.append(
            f"<p class='warn'>skipped {html.escape(row['track'])}/{html.escape(str(row['sample']))} "
            f"({html.escape(str(row.get('analysis', 'all')))}): {html.escape(row['error'])} "
            f"(fix: {html.escape(row['fix'])})</p>"
        )
    parts.append("<h2>Figures</h2>")
    for title, fig in figures:
        data = base64.b64encode(Path(fig).read_bytes()).decode()
        parts.append(
            f"<h3>{html.escape(title)}</h3><img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>"
        )
    shown = json_safe({**summary, "data": data_name, "model": Path(exp.model).name or exp.model})
    parts.append(f"<h2>Summary</h2><pre>{html.escape(json.dumps(shown, indent=1, default=str))}</pre></body></html>")
    return write_atomic(path, "\n".join(parts))
