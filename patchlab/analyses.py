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
from .lens import chance_threshold, critical_layer, sample_lens
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


def _patch_rows(lalm, exp, samples, pool, labels, prompts=None, condition=None) -> pd.DataFrame:
    kind = exp.patch.get("corruption", "swap")
    pairs = [
        make_pair(
            lalm,
            s,
            kind,
            exp.prompt,
            labels.index(s.label),
            pool,
            exp.seed,
            prompt=None if prompts is None else prompts[s.id],
        )
        for s in samples
    ]
    specs = region_specs(lalm.n_layers, REGIONS, exp.patch.get("site", "resid_pre"))
    t = patch(lalm, pairs, specs, labels.token_ids, max_batch=exp.patch.get("max_batch", 64), progress=False).table
    t.insert(0, "track", samples[0].track)
    if condition is not None:
        t.insert(1, "condition", condition)
    t["donor"] = t["sample"].map({p.sample: p.corruption.get("donor", "") for p in pairs})
    return t


def usable(lalm: HookedLALM, exp: Experiment, samples, pool, labels) -> tuple[list, pd.DataFrame]:
    """Samples whose audio loads and whose pair can be built; the others become warning rows (sample, error, fix)."""
    ok, skipped = [], []
    for s in samples:
        try:
            load_audio(s.path, lalm.sampling_rate, max_seconds=lalm.adapter.max_seconds)
            if {"patch", "ground", "cue"} & set(exp.analyses):
                make_pair(
                    lalm, s, exp.patch.get("corruption", "swap"), exp.prompt, labels.index(s.label), pool, exp.seed
                )
            ok.append(s)
        except PatchlabError as e:
            warnings.warn(f"skipping {s.track}/{s.id}: {e.what}", stacklevel=2)
            skipped.append(dict(track=s.track, sample=s.id, path=str(s.path), error=e.what, fix=e.fix))
    return ok, pd.DataFrame(skipped, columns=["track", "sample", "path", "error", "fix"])


def shard_tables(lalm: HookedLALM, exp: Experiment, shard) -> dict[str, pd.DataFrame]:
    """Everything one shard contributes, as tidy tables keyed by analysis (broken samples: `skipped` rows)."""
    pool = load_track(exp.data, shard.track)
    track_labels = sorted({s.label for s in pool})
    labels = label_set(lalm, track_labels, exp.prompt)
    samples, skipped = usable(
        lalm, exp, load_track(exp.data, shard.track, exp.limit)[shard.start : shard.stop], pool, labels
    )
    out: dict[str, pd.DataFrame] = {"skipped": skipped}
    if not samples:
        return out
    if "lens" in exp.analyses:
        rows = []
        for fmt in exp.formats:
            ls = label_set(lalm, track_labels, fmt)
            for s in samples:
                wave = load_audio(s.path, lalm.sampling_rate)
                batch = lalm.prepare(wave, lalm.sampling_rate, build_prompt(s, fmt), id=s.id, label=s.label)
                rows += [
                    {"track": s.track, "format": fmt, **r}
                    for r in sample_lens(lalm, batch, ls, exp.lens.get("last_text", 5), exp.lens.get("audio_bins", 10))
                ]
        out["lens"] = pd.DataFrame(rows)
    if "patch" in exp.analyses or "ground" in exp.analyses:
        out["patch"] = _patch_rows(lalm, exp, samples, pool, labels)
    if "enrich" in exp.analyses:
        combos = grid(lalm.n_layers, exp.enrich.get("coefficients", (0.5, 1.0, "mean")), exp.enrich.get("step"))
        rows = []
        for s in samples:
            wave = load_audio(s.path, lalm.sampling_rate)
            batch = lalm.prepare(wave, lalm.sampling_rate, build_prompt(s, exp.prompt), id=s.id, label=s.label)
            rows += [
                {"track": s.track, **r}
                for r in enrichment_rows(lalm, batch, combos, labels.token_ids, labels.index(s.label))
            ]
        out["enrich"] = pd.DataFrame(rows)
    if "cue" in exp.analyses:
        out["cue"], out["cue_patch"] = _cue_tables(lalm, exp, samples, pool, labels, track_labels)
    return out


def _cue_tables(lalm, exp, samples, pool, labels, track_labels):
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
            wave = load_audio(s.path, lalm.sampling_rate)
            batch = lalm.prepare(wave, lalm.sampling_rate, prompts[s.id])
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
        patches.append(_patch_rows(lalm, exp, samples, pool, labels, prompts, condition))
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
        scores = per.groupby(["track", "format", "layer", "position"], sort=False, as_index=False)["correct"].mean()
        scores = scores.rename(columns={"correct": "score"})
        write_table(out / "tables" / "lens_per_sample.csv", per)
        write_table(out / "tables" / "information_scores.csv", scores)
        n_layers = int(per["layer"].max()) + 1
        for (track, fmt), g in scores.groupby(["track", "format"], sort=False):
            n_labels = len({s.label for s in load_track(exp.data, track)})  # the lens reads the track's label set
            alpha = exp.lens.get("alpha", 0.2)
            crit = {
                pos: critical_layer(
                    h.sort_values("layer")["score"].to_numpy(), n_labels, alpha, exp.lens.get("weight", "excess")
                )
                for pos, h in g.groupby("position", sort=False)
            }
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
            m = g.pivot(index="layer", columns="position", values="score")[list(dict.fromkeys(g["position"]))]
            path = plots.lens_heatmap(
                m, crit, out / "plots" / f"lens_{track}_{fmt}.png", f"{track} / {fmt}: information score"
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
