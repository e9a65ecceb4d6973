"""The analyses of an experiment, per shard (lens, patch, enrich, cue rows) and merged (scores, grounding, summary)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .answer import option_choice
from .corrupt import make_pair
from .data import build_prompt, draw_key, label_set, load_clip, load_track, verbalize
from .enrich import enrichment_rows, grid, search, search_split
from .errors import PatchlabError
from .experiment import Experiment
from .grounding import grounding, regions_for
from .lens import (
    chance_threshold,
    clip_critical_layers,
    critical_layer,
    critical_layers,
    information_scores,
    label_critical_layers,
    sample_lens,
    score_matrix,
)
from .models.base import HookedLALM, Prompt
from .patching import patch, region_specs
from .screen import region_atp, to_verify, verified

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


def _pair(lalm, exp, s, pool, labels, prompt=None, section="patch"):
    """The clean/corrupted pair of one clip, corrupted as `section` (patch or cue) of the config says."""
    kind = exp.options(section)["corruption"]
    return make_pair(lalm, s, kind, exp.prompt, labels.index(s.label), pool, exp.seed, prompt=prompt)


def _layers(lalm: HookedLALM, layers: list[int] | None, key: str) -> list[int] | None:
    """A config's layer list, refused (naming `key`) if any layer is outside the model."""
    bad = [la for la in layers or () if not 0 <= la < lalm.n_layers]
    if bad:
        raise PatchlabError(f"{key} {bad} are outside 0..{lalm.n_layers - 1}", "list layers of the model")
    return layers


def _patch_rows(lalm, exp, pairs, labels, track, condition=None, skipped=None, regions=None) -> pd.DataFrame:
    """Clean audio / text / final positions (or `regions`) patched into each corrupted run, at every layer.

    With `skipped` (a list), a pair whose run turns non-finite becomes a skipped row instead of stopping the run.
    """
    opts = exp.options("patch")
    chosen = _layers(lalm, opts["layers"], "patch.layers")
    regions = regions or regions_for(pairs)
    specs = region_specs(lalm.n_layers, regions, opts["site"], layers=chosen)
    tables = []
    for p in pairs:
        try:
            res = patch(lalm, [p], specs, labels.token_ids, max_batch=opts["max_batch"], progress=False)
        except PatchlabError as e:
            if skipped is None:
                raise
            skipped.append(_skip_row(track, p.sample, "", e, "patch"))
            continue
        tables.append(res.table)
    t = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    if t.empty:
        return t
    t.insert(0, "track", track)
    if condition is not None:
        t.insert(1, "condition", condition)
    t["donor"] = t["sample"].map({p.sample: p.corruption.get("donor", "") for p in pairs})
    return t


def _screen_rows(lalm, pairs, labels, track, skipped) -> pd.DataFrame:
    """Each clip's AtP estimates of region restoration at every layer (screening; see patchlab.screen)."""
    tables = []
    for p in pairs:
        try:
            tables.append(region_atp(lalm, p, labels.token_ids, regions_for([p])))
        except PatchlabError as e:
            skipped.append(_skip_row(track, p.sample, "", e, "screen"))
    t = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    if not t.empty:
        t.insert(0, "track", track)
    return t


SKIP_COLUMNS = ["track", "sample", "path", "analysis", "error", "fix"]


def _skip_row(track: str, sample: str, path: str, e: PatchlabError, analysis: str) -> dict:
    warnings.warn(f"skipping {track}/{sample} ({analysis}): {e.what}", stacklevel=3)
    return dict(track=track, sample=sample, path=path, analysis=analysis, error=e.what, fix=e.fix)


def usable(lalm: HookedLALM, exp: Experiment, samples, pool, labels) -> tuple[list, dict, dict, list]:
    """Samples whose audio loads, their waveforms, and the pairs that can be built (patching analyses).

    A clip that cannot be loaded is left out of everything; one whose pair cannot be built only out of the
    patching analyses (it keeps its lens rows). Each becomes a skipped row (track, sample, path, analysis, error, fix).
    """
    ok, waves, pairs, skipped = [], {}, {}, []
    needs_pair = bool({"patch", "ground", "cue"} & set(exp.analyses))
    for s in samples:
        try:
            waves[s.id] = load_clip(lalm, s.path)
        except PatchlabError as e:
            skipped.append(_skip_row(s.track, s.id, _shown(s), e, "all"))
            continue
        ok.append(s)
        if needs_pair:
            try:
                pairs[s.id] = _pair(lalm, exp, s, pool, labels)
            except PatchlabError as e:
                skipped.append(_skip_row(s.track, s.id, _shown(s), e, "patch"))
    return ok, waves, pairs, skipped


def _shown(s) -> str:
    """A clip's path as shown in tables: relative to the dataset folder (no machine paths)."""
    try:
        return str(s.path.relative_to(s.root)) if s.root is not None else s.path.name
    except ValueError:
        return s.path.name


def _topup_tables(lalm, exp, shard, samples, pairs, labels, skipped) -> dict[str, pd.DataFrame]:
    """A screened run's second-phase shard: its clips patched for real at the regions each is now verified for."""
    wanted = dict(zip(shard.samples, shard.regions))
    tables = []
    for regions in dict.fromkeys(wanted.values()):  # clips verified for the same regions patched together
        todo = [pairs[s.id] for s in samples if s.id in pairs and wanted[s.id] == regions]
        tables.append(_patch_rows(lalm, exp, todo, labels, shard.track, skipped=skipped, regions=regions.split("+")))
    tables = [t for t in tables if len(t)]
    topup = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    return {"topup": topup, "skipped": pd.DataFrame(skipped, columns=SKIP_COLUMNS)}


def shard_tables(lalm: HookedLALM, exp: Experiment, shard) -> dict[str, pd.DataFrame]:
    """Everything one shard contributes, as tidy tables keyed by analysis (broken samples: `skipped` rows)."""
    pool = load_track(exp.data, shard.track)
    track_labels = sorted({s.label for s in pool})
    labels = label_set(lalm, track_labels, exp.prompt, exp.label_space)
    samples = exp.samples(shard.track)
    # a second-phase shard holds the clips it names; a first-phase one a run of consecutive clips
    samples = [s for s in samples if s.id in shard.samples] if shard.regions else samples[shard.start : shard.stop]
    samples, waves, pairs, skipped = usable(lalm, exp, samples, pool, labels)
    if shard.regions:
        return _topup_tables(lalm, exp, shard, samples, pairs, labels, skipped)
    out: dict[str, pd.DataFrame] = {}

    def prepared(s, prompt: Prompt):
        return lalm.prepare(waves[s.id], lalm.sampling_rate, prompt, id=s.id, label=s.label)

    if samples and "lens" in exp.analyses:
        rows, answers, lens = [], {}, exp.options("lens")
        for s in samples if "findings" in exp.analyses else ():  # the model's own answer, once per clip
            choice = option_choice(lalm, s, wave=waves[s.id])
            answers[s.id] = dict(answer=s.options[choice], answer_correct=choice == s.answer)
        for fmt in exp.formats:
            ls = label_set(lalm, track_labels, fmt, exp.label_space)
            for s in samples:
                try:
                    got = sample_lens(
                        lalm,
                        prepared(s, build_prompt(s, fmt)),
                        ls,
                        lens["last_text"],
                        lens["audio_bins"],
                    )
                except PatchlabError as e:
                    skipped.append(_skip_row(s.track, s.id, _shown(s), e, f"lens[{fmt}]"))
                    continue
                rows += [{"track": s.track, "format": fmt, **r, **answers.get(s.id, {})} for r in got]
        out["lens"] = pd.DataFrame(rows)
    paired = [s for s in samples if s.id in pairs]
    if paired and ("patch" in exp.analyses or "ground" in exp.analyses):
        todo = [pairs[s.id] for s in paired]
        ground = exp.options("ground")
        share, small_gap = ground["screen"], ground["screen_gap"]
        if share is not None:  # every clip screened by attribution, the verified share patched for real
            out["screen"] = scr = _screen_rows(lalm, todo, labels, shard.track, skipped)
            gaps = dict(zip(scr["sample"], scr["gap"])) if len(scr) else {}
            todo = [p for p in todo if to_verify(p.sample, gaps.get(p.sample), share, exp.seed, small_gap)]
        out["patch"] = _patch_rows(lalm, exp, todo, labels, shard.track, skipped=skipped)
    if samples and "enrich" in exp.analyses:
        enrich = exp.options("enrich")
        combos = grid(lalm.n_layers, enrich["coefficients"], enrich["step"])
        rows = []
        for s in samples:
            try:
                got = enrichment_rows(
                    lalm, prepared(s, build_prompt(s, exp.prompt)), combos, labels.token_ids, labels.index(s.label)
                )
            except PatchlabError as e:
                skipped.append(_skip_row(s.track, s.id, _shown(s), e, "enrich"))
                continue
            rows += [{"track": s.track, **r} for r in got]
        out["enrich"] = pd.DataFrame(rows)
    if samples and "probe" in exp.analyses:
        from .probe import probe_clips

        clips = [(s.id, s.label, prepared(s, build_prompt(s, exp.prompt)), len(waves[s.id]) / lalm.sampling_rate)
                 for s in samples]  # fmt: skip
        t = probe_clips(lalm, clips)
        t.insert(0, "track", shard.track)
        out["probe"] = t
    if samples and "knockout" in exp.analyses:
        out["knockout"] = _knockout_rows(lalm, exp, samples, prepared, labels, skipped)
    if paired and "cue" in exp.analyses:
        out["cue"], out["cue_patch"] = _cue_tables(lalm, exp, paired, waves, pool, labels, track_labels)
    out["skipped"] = pd.DataFrame(skipped, columns=SKIP_COLUMNS)
    return out


def _knockout_rows(lalm, exp, samples, prepared, labels, skipped) -> pd.DataFrame:
    """Attention knockouts (query region -> key region, from each chosen layer to the top) on each clean clip."""
    from .patching.knockout import knockout, window_specs

    k = exp.options("knockout")
    layers = _layers(lalm, k["layers"], "knockout.layers")
    pairs = [tuple(p) for p in k["pairs"]]
    specs = window_specs(lalm.n_layers, pairs, layers)
    tables = []
    for s in samples:
        try:
            t = knockout(lalm, [prepared(s, build_prompt(s, exp.prompt))], specs, labels.token_ids,
                         [labels.index(s.label)], max_batch=k.get("max_batch", 64), progress=False)  # fmt: skip
        except PatchlabError as e:
            skipped.append(_skip_row(s.track, s.id, _shown(s), e, "knockout"))
            continue
        t.insert(0, "track", s.track)
        tables.append(t)
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def _cue_tables(lalm, exp, samples, waves, pool, labels, track_labels):
    """Listen vs guess: each clip with a cue that agrees and one that conflicts; answers and grounding per condition."""
    import torch

    rows, patches = [], []
    for condition in ("agree", "conflict"):
        prompts = {}
        for s in samples:
            key = draw_key(s.id)
            rng = np.random.default_rng([exp.seed, len(key), sum(map(ord, key))])
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
        pairs = [_pair(lalm, exp, s, pool, labels, prompts[s.id], "cue") for s in samples]
        patches.append(_patch_rows(lalm, exp, pairs, labels, samples[0].track, condition))
    return pd.DataFrame(rows), pd.concat(patches, ignore_index=True)


def _random_share(patched: pd.DataFrame, exp: Experiment) -> pd.DataFrame:
    """The clips a screened run verified at random (not its take-all stratum of small gaps), so that statistics and
    verdicts on real patching rest on a random sample of the dataset; all clips when not screening."""
    share = exp.options("ground")["screen"]
    if share is None:
        return patched
    return patched[patched["sample"].map(lambda s: verified(s, share, exp.seed)).astype(bool)]


def _ground(table: pd.DataFrame, exp: Experiment):
    g = exp.options("ground")
    return grounding(
        table,
        g["metric"],
        g["tol"],
        g["n_boot"],
        g["level"],
        seed=exp.seed,
        drop_unchanged=True,
    )


def _screening(exp: Experiment, tables: dict[str, pd.DataFrame], out: Path, figures: list, summary: dict) -> None:
    """Per track: the screened per-layer region restorations over all clips, and AtP's agreement with real
    patching on the verified ones (patchlab.screen)."""
    from .io import write_table
    from .report import plots
    from .screen import estimate

    scr = tables["screen"]
    write_table(out / "tables" / "screen_atp.csv", scr)
    empty = pd.DataFrame(columns=["track", "sample", "direction", "site", "position"])
    second = tables.get("topup", empty)
    if len(second):
        write_table(out / "tables" / "screen_topup.csv", second)
    real = pd.concat([tables.get("patch", empty), second], ignore_index=True)
    opts = exp.options("ground")
    small_gap, tol = opts["screen_gap"], opts["screen_tol"]
    for track, g in scr.groupby("track", sort=False):
        per_layer, agreement = estimate(g, real[real["track"] == track], opts["level"], small_gap)
        per_layer.insert(0, "track", track)
        write_table(out / "tables" / f"screened_grounding_{track}.csv", per_layer)
        path = plots.screened_curves(per_layer, out / "plots" / f"screened_grounding_{track}.png",
                                     f"{track}: region restorations over every clip, screened by AtP")  # fmt: skip
        figures.append((f"Screened grounding: {track}", path))
        width = float((per_layer["hi"] - per_layer["lo"]).max())
        take_all = int(g.loc[g["gap"].abs() < small_gap, "sample"].nunique())
        agreement.update(share=opts["screen"], screen_gap=small_gap, n_clips_take_all=take_all,
                         max_interval_width=width if np.isfinite(width) else None)  # fmt: skip
        if tol is not None:  # the second phase: which clips it added per region, and whether the target was met
            added = second[second["track"] == track].groupby("position")["sample"].nunique()
            half = per_layer.groupby("position").apply(lambda p: float((p["hi"] - p["lo"]).max() / 2))
            agreement.update(screen_tol=tol, n_clips_topped_up={str(k): int(v) for k, v in added.items()},
                             max_half_width={str(k): v for k, v in half.items()},
                             tol_met=bool(np.isfinite(half).all() and (half <= tol + 1e-12).all()))  # fmt: skip
        if not np.isfinite(width):
            agreement["note"] = (
                "fewer than 3 clips verified outside the take-all stratum: the estimates have no interval"
                " (raise ground.screen)"
            )
        summary["tracks"].setdefault(track, {})["screening"] = agreement


def rests_on(exp: Experiment, tables: dict[str, pd.DataFrame]) -> dict:
    """Per track: the clips analysed (n, n per label), the label set and each prompt format's wording."""
    analysed: dict[str, set] = {}
    for name in ("lens", "patch", "enrich", "cue"):
        for track, g in tables.get(name, pd.DataFrame(columns=["track", "sample"])).groupby("track"):
            analysed.setdefault(track, set()).update(map(str, g["sample"]))
    out = {}
    for track in exp.tracks:
        everything = load_track(exp.data, track)
        samples = [s for s in everything if s.id in analysed.get(track, set())]
        per_label = pd.Series([s.label for s in samples], dtype=object).value_counts().sort_index()
        labels_here = sorted({s.label for s in samples})
        prompts = {}
        for fmt in dict.fromkeys([*exp.formats, exp.prompt]):
            p = build_prompt(samples[0], fmt) if samples else None
            prompts[fmt] = {"instruction": p.instruction, "answer_starts": p.prefix} if p else {}
        out[track] = {
            "n_clips": len(samples),
            "per_label": {str(k): int(v) for k, v in per_label.items()},
            "labels": sorted({s.label for s in everything}),
            "verbalized": {fmt: [verbalize(la, fmt, exp.label_space) for la in labels_here] for fmt in prompts},
            "prompts": prompts,
        }
    return out


def _findings(exp, tables, ground_rows, label_counts, out, figures, summary) -> list:
    """AudioLens' RQ1-RQ4 tested per (track, format) cell and track; RQ2 curves written and drawn."""
    from . import findings as F
    from .io import write_table
    from .report import plots

    per, knock = tables["lens"], tables.get("knockout")
    lens = exp.options("lens")
    alpha, weight, seed = lens["alpha"], lens["weight"], exp.seed
    tested, cells = [], []
    for (track, fmt), mine in per.groupby(["track", "format"], sort=False):
        cell, n_labels = f"{track} [{fmt}]", label_counts[track]
        tested += [(track, v) for v in F.rq1(cell, mine, seed) + F.rq2(cell, mine, seed)]
        tested.append((track, F.rq3_clips(cell, mine, n_labels, alpha, weight, seed)))
        cells.append(F.cell_row(track, fmt, mine, n_labels, alpha, weight))
        curves = F.rq2_curves(mine, seed)
        write_table(out / "tables" / f"answer_curves_{track}_{fmt}.csv", curves)
        path = plots.answer_curves(curves, out / "plots" / f"answer_curves_{track}_{fmt}.png",
                                   f"{cell}: p(true) by the model's answer and label")  # fmt: skip
        figures.append((f"RQ2, successes and failures: {cell}", path))
    tested.append(("all", F.rq3_cells(pd.DataFrame(cells), seed)))
    for track in exp.tracks:
        k = knock[knock.track == track] if knock is not None and len(knock) else None
        tested += [(track, v) for v in F.rq4(track, k, ground_rows.get(track), seed)]
    summary["findings"] = {"cells": cells}
    return tested


def _probe(exp, tables, out, figures, summary) -> list:
    """Encoder probes per track: out-of-fold balanced accuracy per encoder layer, drawn beside the decoder's lens."""
    from . import stats
    from .io import write_table
    from .probe import probe_scores
    from .report import plots

    tested = []
    for track, g in tables["probe"].groupby("track", sort=False):
        table, info = probe_scores(g.drop(columns="track"), seed=exp.seed)
        right = info.pop("last_layer_correct")
        write_table(out / "tables" / f"encoder_probe_{track}.csv", table)
        t = summary["tracks"].setdefault(track, {})
        t["encoder_probe"] = {**info, "balanced_accuracy": table["balanced_accuracy"].tolist()}
        prior = g.drop_duplicates("sample")["label"].value_counts(normalize=True).max()
        last = int(table["encoder_layer"].max())
        tested.append((track, stats.above_chance(
            f"{track}: the attribute is linearly decodable from the audio encoder's last layer (layer {last}; "
            "out-of-fold probe, against the majority-label share)", list(right.values()), float(prior),
        ).matters(stats.MIN_EFFECT["accuracy"])))  # fmt: skip
        lens = tables.get("lens")
        decoder = None
        if lens is not None and len(lens):
            mine = lens[(lens.track == track) & (lens.format == exp.prompt) & (lens.position == "final")]
            decoder = information_scores(mine).sort_values("layer") if len(mine) else None
        title = f"{track}: from the first encoder layer to the last decoder layer"
        path = plots.encoder_decoder(table, decoder, out / "plots" / f"encoder_probe_{track}.png", title, info)
        figures.append((f"Encoder probe and decoder lens: {track}", path))
    return tested


def merge(
    exp: Experiment, tables: dict[str, pd.DataFrame], out: Path, small: bool = False, random_weights: bool = False
) -> dict:
    """Merged tables, plots, verdicts, summary.json and report.html from all shards' rows."""
    from . import findings as F
    from . import verdicts as V
    from .io import write_json, write_table
    from .report import build_report, plots

    out = Path(out)
    data = Path(exp.data)
    summary: dict = {
        "name": exp.name,
        "model": exp.model,
        "random_weights": random_weights,
        "data": exp.data,
        "synthetic_data": (data / "SOURCES.tsv").exists(),  # written by patchlab's speech builder
        "small": small,
        "seed": exp.seed,
        "tracks": {},
    }
    tested: list = []
    figures: list[tuple[str, Path]] = []
    ground_rows: dict[str, pd.DataFrame] = {}
    n_layers = None
    if "lens" in tables:
        per = tables["lens"]
        scores = information_scores(per, by=("track", "format"))
        write_table(out / "tables" / "lens_per_sample.csv", per)
        write_table(out / "tables" / "information_scores.csv", scores)
        n_layers = int(per["layer"].max()) + 1
        label_counts = {t: len({s.label for s in load_track(exp.data, t)}) for t in scores["track"].unique()}
        lens = exp.options("lens")
        alpha, weight = lens["alpha"], lens["weight"]
        for (track, fmt), g in scores.groupby(["track", "format"], sort=False):
            n_labels = label_counts[track]  # the lens reads the track's label set
            crit = critical_layers(g, n_labels, alpha, weight)
            at_final = g[g.position == "final"].sort_values("layer")
            final = at_final["score"].to_numpy()
            mine = per[(per.track == track) & (per.format == fmt)]
            acc = V.lens_verdict(track, fmt, mine, n_labels)
            tested.append((track, acc))
            crit_lo, crit_hi = V.critical_layer_ci(mine, n_labels, alpha, weight, seed=exp.seed)
            balanced = at_final["balanced_score"].to_numpy()
            clips = clip_critical_layers(mine, n_labels, alpha, weight)
            t = summary["tracks"].setdefault(track, {})
            t.setdefault("lens", {})[fmt] = {
                "accuracy_last_layer": float(final[-1]),
                "balanced_accuracy_last_layer": float(at_final["balanced_score"].iloc[-1]),
                "one_label_wins_layers": [int(la) for la in at_final.loc[at_final["one_label_wins"], "layer"]],
                **dict(zip(("accuracy_lo", "accuracy_hi"), V.lens_accuracy_ci(mine))),
                "n_samples": int(mine["sample"].nunique()),
                "critical_layer": crit["final"],
                "critical_layer_lo": crit_lo,
                "critical_layer_hi": crit_hi,
                "chance_threshold": chance_threshold(n_labels, alpha),
                "n_labels": n_labels,
                "max_score": float(final.max()),
                "critical_layers": crit,
                "rank_score_last_layer": float(at_final["rank_score"].iloc[-1]),
                "balanced_critical_layer": critical_layer(balanced, n_labels, alpha, weight),
                "label_critical_layers": label_critical_layers(mine, n_labels, alpha, weight),
                "clips_never_above_chance": int(clips["never_above_chance"].sum()),
                "answer_accuracy": float(mine.drop_duplicates("sample")["answer_correct"].mean())
                if "answer_correct" in mine
                else None,
            }
            path = plots.lens_heatmap(
                score_matrix(g),
                crit,
                out / "plots" / f"lens_{track}_{fmt}.png",
                f"{track} / {fmt} prompt: information score over {t['lens'][fmt]['n_samples']} clips",
                tau=chance_threshold(n_labels, alpha),
            )
            figures.append((f"Logit lens: {track}, {fmt} prompt", path))
    if "patch" in tables:
        t = tables["patch"]
        write_table(out / "tables" / "patching.csv", t)
        for track, g in _random_share(t, exp).groupby("track", sort=False):
            path = plots.region_curves(
                g,
                "logit_diff_restored",
                out / "plots" / f"patch_{track}.png",
                f"{track}: clean regions patched into the {exp.options('patch')['corruption']}-corrupted run",
            )
            figures.append((f"Activation patching: {track}", path))
            s = summary["tracks"].setdefault(track, {})
            s["clean_accuracy"] = float(g.groupby("sample")["clean_acc"].first().mean())
            s["corrupt_accuracy"] = float(g.groupby("sample")["corrupt_acc"].first().mean())
            if "ground" in exp.analyses:
                res = _ground(g, exp)
                per_layer = res.per_layer
                per_layer.insert(0, "track", track)
                write_table(out / "tables" / f"grounding_{track}.csv", per_layer)
                s["grounding"] = res.overall
                ground_rows[track] = res.per_sample
                tested += [(track, v) for v in V.grounding_verdicts(track, res.per_sample, exp.seed)]
                path = plots.grounding_curves(
                    per_layer,
                    out / "plots" / f"grounding_{track}.png",
                    f"{track}: grounding over {res.overall['n_samples']} clips",
                    handover=res.overall,
                )
                figures.append((f"Grounding: {track}", path))
    if "screen" in tables and len(tables["screen"]):
        _screening(exp, tables, out, figures, summary)
    if "enrich" in tables:
        t = tables["enrich"]
        write_table(out / "tables" / "enrichment.csv", t)
        for track, g in t.groupby("track", sort=False):
            split = exp.options("enrich")["split"]
            choice = search(g, split, exp.seed)
            summary["tracks"].setdefault(track, {})["enrichment"] = choice
            tested.append(
                (track, V.enrichment_verdict(track, g, choice, search_split(g, split, exp.seed)[1], exp.seed))
            )
    if "knockout" in tables and len(tables["knockout"]):
        knock = tables["knockout"]
        write_table(out / "tables" / "knockout.csv", knock)
        for track, g in knock.groupby("track", sort=False):
            curves = F.knockout_curves(g, exp.seed)
            curves.insert(0, "track", track)
            write_table(out / "tables" / f"knockout_curves_{track}.csv", curves)
            summary["tracks"].setdefault(track, {})["knockout"] = curves.to_dict(orient="records")
            path = plots.knockout_curves(curves, out / "plots" / f"knockout_{track}.png",
                                         f"{track}: attention knockout over {g['sample'].nunique()} clips")  # fmt: skip
            figures.append((f"Attention knockout: {track}", path))
    if "probe" in tables and len(tables["probe"]):
        tested += _probe(exp, tables, out, figures, summary)
    if "findings" in exp.analyses and "lens" in tables:
        tested += _findings(exp, tables, ground_rows, label_counts, out, figures, summary)
    if "cue" in tables:
        write_table(out / "tables" / "cue.csv", tables["cue"])
        write_table(out / "tables" / "cue_patching.csv", tables["cue_patch"])
        for track, g in tables["cue"].groupby("track", sort=False):
            res = {}
            for cond, h in g.groupby("condition", sort=False):
                overall = _ground(
                    tables["cue_patch"][(tables["cue_patch"].track == track) & (tables["cue_patch"].condition == cond)],
                    exp,
                ).overall
                res[cond] = {
                    "follows_audio": float(h["follows_audio"].mean()),
                    "follows_cue": float(h["follows_cue"].mean()),
                    "n": int(len(h)),
                    "share": overall["share"],
                    "share_lo": overall["share_lo"],
                    "share_hi": overall["share_hi"],
                    "dropped": overall["dropped"],
                }
            verdict = V.cue_verdict(track, g, exp.seed)
            tested.append((track, verdict))
            res["test"] = verdict
            summary["tracks"].setdefault(track, {})["listen_vs_guess"] = res
    verdict_table = V.table(tested)
    for t in summary["tracks"].values():
        lvg = t.get("listen_vs_guess")
        if lvg:
            v = lvg.pop("test")
            lvg.update(p=v.p, p_corrected=v.p_corrected, n_test=v.n)
            lvg["verdict"] = {
                "supported": "listens",
                "refuted": "guesses from the text cue",
                "negligible": "neither: following the audio and the cue differ too little to matter",
            }.get(v.verdict, f"inconclusive ({v.note or 'the test does not reach the level'})")
    write_table(out / "tables" / "verdicts.csv", verdict_table)
    summary["verdicts"] = verdict_table.to_dict(orient="records")
    summary["rests_on"] = rests_on(exp, tables)
    skipped = tables.get("skipped", pd.DataFrame())
    if len(skipped):
        write_table(out / "tables" / "skipped.csv", skipped)
    summary["skipped"] = skipped.to_dict(orient="records")
    if n_layers is not None:
        summary["n_layers"] = n_layers
    write_json(out / "summary.json", summary)
    build_report(exp, summary, figures, out / "report.html")
    return summary
