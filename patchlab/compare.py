"""Cross-model comparison: the same clips, prompts and corruption run on several models (config key `models`), each
model a complete run of its own under out/models/<name>/, then compared clip by clip.

Per track and per pair of models (the first model against each other), paired by clip:
- where the label is read out: each clip's critical layer at the final position (relative depth, 0 = first layer,
  1 = last), the difference tested;
- how deep the audio positions carry the answer: each clip's mean Delta_audio over the patched layers ("audio
  depth"; a model that fuses late keeps it high, one that fuses progressively lets it fall), the difference tested,
  and per layer the difference of Delta_audio with Holm-corrected p (tables/compare_grounding_<track>.csv);
- for a model with a transcript region (an ASR front end's words in the prompt): whether the transcript restores
  more of the answer than the audio at the first patched layer;
- knockout curves of each model side by side (tables/compare_knockout_<track>.csv).

Restorations are ratios over each clip's clean - corrupt gap, so a clip with a small gap can restore +12 or -11
and decide a mean: the two tests on restorations use signed ranks and the Hodges-Lehmann shift
(`stats.paired_ranks`); the critical depth, bounded in [0, 1], keeps the mean's sign-flip test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import stats
from .data import load_track
from .errors import PatchlabError
from .experiment import Experiment
from .grounding import grounding
from .io import read_table, write_json, write_table
from .lens import clip_critical_depths
from .report import build_report, plots


def model_slug(model: str, taken: set[str]) -> str:
    """A folder name for a model (its folder's name, or the name it is loaded by), unique among `taken`."""
    base = "".join(c if c.isalnum() or c in "-_." else "-" for c in (Path(model).name or model)).lstrip(".")
    base = base or "model"  # a name of dots alone ("..") would lead out of out/models/
    name, i = base, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    taken.add(name)
    return name


def _per_clip(exp: Experiment, lens: pd.DataFrame | None, ground: pd.DataFrame | None, track: str) -> pd.DataFrame:
    """One row per clip of `track` in one model's run (its lens rows, its grounding per clip and layer): relative
    critical layer, audio depth, first-layer Deltas."""
    out = pd.DataFrame()
    per = lens[lens.track == track] if lens is not None else pd.DataFrame()
    if len(per):
        per = per[per.format == (exp.prompt if exp.prompt in set(per.format) else per.format.iloc[0])]
        n_labels = len({s.label for s in load_track(exp.root(track), track)})
        out = clip_critical_depths(per, n_labels, exp.lens.alpha, exp.lens.weight)
    if ground is not None:
        depth = ground.groupby("sample")["delta_audio"].mean().rename("audio_depth")
        first = ground[ground.layer == ground.layer.min()].set_index("sample")
        cols = [c for c in ("delta_audio", "delta_transcript", "delta_text", "delta_final") if c in first]
        first = first[cols].add_suffix("_first")
        rows = pd.concat([depth, first], axis=1).rename_axis("sample").reset_index()
        rows["top_layer"] = max(1, int(ground["layer"].max()))
        out = rows if out.empty else out.merge(rows, on="sample", how="outer")
    return out


def _paired_rows(a: pd.DataFrame, b: pd.DataFrame, col: str) -> tuple[np.ndarray, np.ndarray]:
    both = a[["sample", col]].merge(b[["sample", col]], on="sample", suffixes=("_a", "_b")).dropna()
    return both[f"{col}_b"].to_numpy(float), both[f"{col}_a"].to_numpy(float)


def _grounding(exp: Experiment, patching: pd.DataFrame | None, track: str) -> pd.DataFrame | None:
    """One model's grounding per clip and layer on `track` (None without patching rows for it)."""
    t = patching[patching.track == track] if patching is not None else None
    if t is None or t.empty:
        return None
    return grounding(t, exp.ground.metric, exp.ground.tol, n_boot=10, drop_unchanged=True).per_sample


def _layer_table(exp: Experiment, per: dict[str, pd.DataFrame], names: list[str]) -> pd.DataFrame:
    """Per layer: each model's mean Delta per region, and B - A of Delta_audio paired by clip (two-sided sign-flip
    p, Holm-corrected over the layers)."""
    a_name, rows = names[0], []
    for b_name in names[1:]:
        a, b = per[a_name], per[b_name]
        for layer in sorted(set(a.layer) & set(b.layer)):
            x, y = a[a.layer == layer], b[b.layer == layer]
            bb, aa = _paired_rows(x, y, "delta_audio")
            d = bb - aa
            lo, hi = stats.bootstrap_mean_ci(d, seed=exp.seed)
            row = {"layer": int(layer), "model_a": a_name, "model_b": b_name, "n": int(d.size),
                   "delta_audio_b_minus_a": float(d.mean()) if d.size else float("nan"), "lo": lo, "hi": hi,
                   "p": stats.sign_flip_p(d, "two-sided", seed=exp.seed)}  # fmt: skip
            for name, g in ((a_name, x), (b_name, y)):
                for col in ("delta_audio", "delta_transcript", "delta_text", "delta_final"):
                    if col in g:
                        row[f"{col}[{name}]"] = float(g[col].mean())
            rows.append(row)
    table = pd.DataFrame(rows)
    if len(table):
        table["p_holm"] = stats.holm(table["p"].to_numpy())
    return table


def compare(exp: Experiment, out: Path, runs: dict[str, Path], small: bool) -> dict:
    """Compare the finished runs `runs` (model's short name -> run folder); writes tables, plots, summary.json and
    report.html into `out`."""
    names = list(runs)
    summaries = {}
    for name, run in runs.items():
        try:
            summaries[name] = json.loads((run / "summary.json").read_text())
        except (OSError, ValueError):
            raise PatchlabError(
                f"the run of {name} in {run} did not finish", "run the config again with --resume"
            ) from None
    tested: list[tuple[str, stats.Verdict]] = []
    figures: list[tuple[str, Path]] = []
    summary: dict = {"name": exp.name, "models": names, "data": exp.data, "small": small, "seed": exp.seed,
                     "random_weights": any(s.get("random_weights") for s in summaries.values()),
                     "tracks": {}, "comparison": {}}  # fmt: skip
    a = names[0]
    tables = {name: {t: read_table(runs[name] / "tables" / f"{t}.csv") if (runs[name] / "tables" / f"{t}.csv").exists()
                     else None for t in ("lens_per_sample", "patching")} for name in names}  # fmt: skip
    for track in exp.tracks:
        ground = {name: _grounding(exp, tables[name]["patching"], track) for name in names}
        clips = {name: _per_clip(exp, tables[name]["lens_per_sample"], ground[name], track) for name in names}
        comp: dict = {"per_model": {}}
        for name in names:
            c = clips[name]
            comp["per_model"][name] = {
                col: float(c[col].mean()) for col in c.columns if col != "sample" and len(c) and c[col].notna().any()
            }
            summary["tracks"][f"{track} · {name}"] = summaries[name]["tracks"].get(track, {})
            if "delta_transcript_first" in c:
                x, y = c["delta_transcript_first"].to_numpy(float), c["delta_audio_first"].to_numpy(float)
                tested.append((track, stats.paired_ranks(
                    f"{track}, {name}: at the first patched layer the transcript restores more of the answer than "
                    "the audio", x, y, seed=exp.seed).matters(stats.MIN_EFFECT["restoration"])))  # fmt: skip
        for b in names[1:]:
            if "critical_depth" in clips[a] and "critical_depth" in clips[b]:
                x, y = _paired_rows(clips[a], clips[b], "critical_depth")
                tested.append((track, stats.paired(
                    f"{track}: {b} reads the label out later than {a} (clip critical layer, relative depth)", x, y,
                    seed=exp.seed).matters(stats.MIN_EFFECT["depth"])))  # fmt: skip
            if "audio_depth" in clips[a] and "audio_depth" in clips[b]:
                x, y = _paired_rows(clips[a], clips[b], "audio_depth")
                tested.append((track, stats.paired_ranks(
                    f"{track}: {b} keeps the answer in its audio positions deeper than {a} (mean Δ_audio over "
                    "the patched layers)", x, y, seed=exp.seed).matters(stats.MIN_EFFECT["restoration"])))  # fmt: skip
        if all(g is not None for g in ground.values()):
            layers = _layer_table(exp, ground, names)
            write_table(out / "tables" / f"compare_grounding_{track}.csv", layers)
            comp["layers"] = layers.to_dict(orient="records")
            path = plots.compare_grounding(layers, names, out / "plots" / f"compare_grounding_{track}.png",
                                           f"{track}: Δ per layer, {' vs '.join(names)}")  # fmt: skip
            figures.append((f"Grounding side by side: {track}", path))
        knock = [
            read_table(runs[n] / "tables" / f"knockout_curves_{track}.csv").assign(model=n)
            for n in names
            if (runs[n] / "tables" / f"knockout_curves_{track}.csv").exists()
        ]
        if knock:
            table = pd.concat(knock, ignore_index=True)
            write_table(out / "tables" / f"compare_knockout_{track}.csv", table)
        summary["comparison"][track] = comp
    contrasts = {name: s["contrast"] for name, s in summaries.items() if "contrast" in s}
    if contrasts:  # each model's two-track contrast (patchlab.analyses.contrast), by model
        summary["contrast"] = contrasts
    for name in names:  # each model's own verdicts, decided again in this experiment's one family
        tested += [(r.get("track", ""), stats.Verdict.from_row(r, f"{name}: ")) for r in summaries[name]["verdicts"]]
    verdicts = stats.decide([v for _, v in tested])
    rows = [{"track": t, **v.as_row()} for (t, _), v in zip(tested, verdicts)]
    table = pd.DataFrame(rows)
    write_table(out / "tables" / "verdicts.csv", table)
    summary["verdicts"] = rows
    summary["rests_on"] = summaries[a].get("rests_on", {})
    write_json(out / "summary.json", summary)
    build_report(exp.replace(model=" vs ".join(names)), summary, figures, out / "report.html")
    return summary
