"""The analyses of an experiment, per shard (lens, patch, enrich, cue rows) and merged (scores, grounding, summary)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .corrupt import make_pair
from .data import build_prompt, label_set, load_audio, load_track, verbalize
from .enrich import enrichment_rows, grid, search
from .errors import PatchlabError
from .experiment import Experiment
from .grounding import REGIONS, grounding
from .lens import chance_threshold, critical_layers, information_scores, sample_lens, score_matrix
from .models.base import HookedLALM, Prompt
from .patching import patch, region_specs

_ATTRIBUTE = {
    "Gender": "speaker's gender",
    "Language": "language spoken",
    "Emotion": "speaker's emotion",
    "Animal": "animal",
}


def cue_prompt(sample, fmt: str, cue_label: str) -> Prompt:
    """The sample's prompt with a textual cue naming `cue_label` in front ("Note: the language spoken is German.")."""
    base = build_prompt(sample, fmt)
    attr = _ATTRIBUTE.get(sample.track, sample.track.lower())
    return Prompt(f"Note: the {attr} is {verbalize(cue_label, 'qa')}. {base.instruction}".strip(), base.prefix)


def _pair(lalm, exp, s, pool, labels, prompt=None):
    kind = exp.patch.get("corruption", "swap")
    return make_pair(lalm, s, kind, exp.prompt, labels.index(s.label), pool, exp.seed, prompt=prompt)


def _patch_rows(lalm, exp, pairs, labels, track, condition=None) -> pd.DataFrame:
    """Clean audio / text / final positions patched into each corrupted run, at every layer."""
    specs = region_specs(lalm.n_layers, REGIONS, exp.patch.get("site", "resid_pre"))
    t = patch(lalm, pairs, specs, labels.token_ids, max_batch=exp.patch.get("max_batch", 64), progress=False).table
    t.insert(0, "track", track)
    if condition is not None:
        t.insert(1, "condition", condition)
    t["donor"] = t["sample"].map({p.sample: p.corruption.get("donor", "") for p in pairs})
    return t


def usable(lalm: HookedLALM, exp: Experiment, samples, pool, labels) -> tuple[list, dict, dict, pd.DataFrame]:
    """Samples whose audio loads and (for patching analyses) whose pair can be built, with their waveforms and
    pairs; the others become warning rows (sample, error, fix)."""
    ok, waves, pairs, skipped = [], {}, {}, []
    needs_pair = bool({"patch", "ground", "cue"} & set(exp.analyses))
    for s in samples:
        try:
            waves[s.id] = load_audio(s.path, lalm.sampling_rate, max_seconds=lalm.adapter.max_seconds)
            if needs_pair:
                pairs[s.id] = _pair(lalm, exp, s, pool, labels)
            ok.append(s)
        except PatchlabError as e:
            warnings.warn(f"skipping {s.track}/{s.id}: {e.what}", stacklevel=2)
            skipped.append(dict(track=s.track, sample=s.id, path=str(s.path), error=e.what, fix=e.fix))
    return ok, waves, pairs, pd.DataFrame(skipped, columns=["track", "sample", "path", "error", "fix"])


def shard_tables(lalm: HookedLALM, exp: Experiment, shard) -> dict[str, pd.DataFrame]:
    """Everything one shard contributes, as tidy tables keyed by analysis (broken samples: `skipped` rows)."""
    pool = load_track(exp.data, shard.track)
    track_labels = sorted({s.label for s in pool})
    labels = label_set(lalm, track_labels, exp.prompt)
    samples = load_track(exp.data, shard.track, exp.limit)[shard.start : shard.stop]
    samples, waves, pairs, skipped = usable(lalm, exp, samples, pool, labels)
    out: dict[str, pd.DataFrame] = {"skipped": skipped}
    if not samples:
        return out

    def prepared(s, prompt: Prompt):
        return lalm.prepare(waves[s.id], lalm.sampling_rate, prompt, id=s.id, label=s.label)

    if "lens" in exp.analyses:
        rows = []
        for fmt in exp.formats:
            ls = label_set(lalm, track_labels, fmt)
            for s in samples:
                batch = prepared(s, build_prompt(s, fmt))
                rows += [
                    {"track": s.track, "format": fmt, **r}
                    for r in sample_lens(lalm, batch, ls, exp.lens.get("last_text", 5), exp.lens.get("audio_bins", 10))
                ]
        out["lens"] = pd.DataFrame(rows)
    if "patch" in exp.analyses or "ground" in exp.analyses:
        out["patch"] = _patch_rows(lalm, exp, [pairs[s.id] for s in samples], labels, shard.track)
    if "enrich" in exp.analyses:
        combos = grid(lalm.n_layers, exp.enrich.get("coefficients", (0.5, 1.0, "mean")), exp.enrich.get("step"))
        rows = []
        for s in samples:
            batch = prepared(s, build_prompt(s, exp.prompt))
            rows += [
                {"track": s.track, **r}
                for r in enrichment_rows(lalm, batch, combos, labels.token_ids, labels.index(s.label))
            ]
        out["enrich"] = pd.DataFrame(rows)
    if "cue" in exp.analyses:
        out["cue"], out["cue_patch"] = _cue_tables(lalm, exp, samples, waves, pool, labels, track_labels)
    return out


def _cue_tables(lalm, exp, samples, waves, pool, labels, track_labels):
    """Listen vs guess: each clip with a cue that agrees and one that conflicts; answers and grounding per condition."""
    import torch

    rows, patches = [], []
    for condition in ("agree", "conflict"):
        prompts = {}
        for s in samples:
            rng = np.random.default_rng([exp.seed, len(s.id), sum(map(ord, s.id))])
            others = [la for la in track_labels if la != s.label]
            cue = s.label if condition == "agree" else others[int(rng.integers(len(others)))]
            prompts[s.id] = cue_prompt(s, exp.prompt, cue)
            batch = lalm.prepare(waves[s.id], lalm.sampling_rate, prompts[s.id])
            with torch.no_grad():
                logits = lalm.forward(batch)[0, -1, list(labels.token_ids)]
            chosen = labels.labels[int(logits.argmax())]
            rows.append(
                dict(
                    track=s.track,
                    condition=condition,
                    sample=s.id,
                    label=s.label,
                    cue=cue,
                    chosen=chosen,
                    follows_audio=chosen == s.label,
                    follows_cue=chosen == cue,
                )
            )
        pairs = [_pair(lalm, exp, s, pool, labels, prompts[s.id]) for s in samples]
        patches.append(_patch_rows(lalm, exp, pairs, labels, samples[0].track, condition))
    return pd.DataFrame(rows), pd.concat(patches, ignore_index=True)


def _ground(table: pd.DataFrame, exp: Experiment) -> tuple[pd.DataFrame, dict]:
    g = exp.ground
    res = grounding(
        table,
        g.get("metric", "logit_diff"),
        g.get("tol", 0.05),
        g.get("n_boot", 1000),
        g.get("level", 0.95),
        seed=exp.seed,
        drop_unchanged=True,
    )
    return res.per_layer, res.overall


def merge(
    exp: Experiment, tables: dict[str, pd.DataFrame], out: Path, small: bool = False, random_weights: bool = False
) -> dict:
    """Merged tables, plots, summary.json and report.html from all shards' rows."""
    from .io import write_json, write_table
    from .report import build_report, plots

    out = Path(out)
    summary: dict = {
        "name": exp.name,
        "model": exp.model,
        "random_weights": random_weights,
        "data": exp.data,
        "small": small,
        "seed": exp.seed,
        "tracks": {},
    }
    figures: list[tuple[str, Path]] = []
    n_layers = None
    if "lens" in tables:
        per = tables["lens"]
        scores = information_scores(per, by=("track", "format"))
        write_table(out / "tables" / "lens_per_sample.csv", per)
        write_table(out / "tables" / "information_scores.csv", scores)
        n_layers = int(per["layer"].max()) + 1
        label_counts = {t: len({s.label for s in load_track(exp.data, t)}) for t in scores["track"].unique()}
        for (track, fmt), g in scores.groupby(["track", "format"], sort=False):
            n_labels = label_counts[track]  # the lens reads the track's label set
            alpha = exp.lens.get("alpha", 0.2)
            crit = critical_layers(g, n_labels, alpha, exp.lens.get("weight", "excess"))
            final = g[g.position == "final"].sort_values("layer")["score"].to_numpy()
            t = summary["tracks"].setdefault(track, {})
            t.setdefault("lens", {})[fmt] = {
                "accuracy_last_layer": float(final[-1]),
                "critical_layer": crit["final"],
                "chance_threshold": chance_threshold(n_labels, alpha),
                "n_labels": n_labels,
                "max_score": float(final.max()),
                "critical_layers": crit,
            }
            path = plots.lens_heatmap(
                score_matrix(g), crit, out / "plots" / f"lens_{track}_{fmt}.png", f"{track} / {fmt}: information score"
            )
            figures.append((f"Logit lens: {track}, {fmt} prompt", path))
    if "patch" in tables:
        t = tables["patch"]
        write_table(out / "tables" / "patching.csv", t)
        for track, g in t.groupby("track", sort=False):
            path = plots.region_curves(
                g,
                "logit_diff_restored",
                out / "plots" / f"patch_{track}.png",
                f"{track}: restored logit difference by region ({exp.patch.get('corruption', 'swap')})",
            )
            figures.append((f"Activation patching: {track}", path))
            s = summary["tracks"].setdefault(track, {})
            s["clean_accuracy"] = float(g.groupby("sample")["clean_acc"].first().mean())
            s["corrupt_accuracy"] = float(g.groupby("sample")["corrupt_acc"].first().mean())
            if "ground" in exp.analyses:
                per_layer, overall = _ground(g, exp)
                per_layer.insert(0, "track", track)
                write_table(out / "tables" / f"grounding_{track}.csv", per_layer)
                s["grounding"] = overall
                path = plots.grounding_curves(
                    per_layer, out / "plots" / f"grounding_{track}.png", f"{track}: grounding (95% CI over samples)"
                )
                figures.append((f"Grounding: {track}", path))
    if "enrich" in tables:
        t = tables["enrich"]
        write_table(out / "tables" / "enrichment.csv", t)
        for track, g in t.groupby("track", sort=False):
            summary["tracks"].setdefault(track, {})["enrichment"] = search(g, exp.enrich.get("split", 0.5), exp.seed)
    if "cue" in tables:
        write_table(out / "tables" / "cue.csv", tables["cue"])
        write_table(out / "tables" / "cue_patching.csv", tables["cue_patch"])
        for track, g in tables["cue"].groupby("track", sort=False):
            res = {}
            for cond, h in g.groupby("condition", sort=False):
                per_layer, overall = _ground(
                    tables["cue_patch"][(tables["cue_patch"].track == track) & (tables["cue_patch"].condition == cond)],
                    exp,
                )
                res[cond] = {
                    "follows_audio": float(h["follows_audio"].mean()),
                    "follows_cue": float(h["follows_cue"].mean()),
                    "n": int(len(h)),
                    "share": overall["share"],
                    "share_lo": overall["share_lo"],
                    "share_hi": overall["share_hi"],
                    "dropped": overall["dropped"],
                }
            conflict = res.get("conflict", {})
            res["verdict"] = (
                "listens"
                if conflict.get("follows_audio", 0) > conflict.get("follows_cue", 0)
                else "guesses from the text cue"
            )
            summary["tracks"].setdefault(track, {})["listen_vs_guess"] = res
    skipped = tables.get("skipped", pd.DataFrame())
    if len(skipped):
        write_table(out / "tables" / "skipped.csv", skipped)
    summary["skipped"] = skipped.to_dict(orient="records")
    if n_layers is not None:
        summary["n_layers"] = n_layers
    write_json(out / "summary.json", summary)
    build_report(exp, summary, figures, out / "report.html")
    return summary
