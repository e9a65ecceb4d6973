"""AudioLens' findings (RQ1-RQ5) as hypotheses, each tested over clips with effect, CI, p and n.

Where a hypothesis names a layer found from the data (a peak, a dip), the layer is chosen on one seeded half of
the clips and the test runs on the other half, so the choice cannot make its own test pass.

RQ1 information rises with depth, but not monotonically; RQ2 failures peak mid-way and fall while successes keep
rising; RQ3 an earlier critical layer goes with higher accuracy; RQ4 the final position queries the audio
directly (knockout, region patching); RQ5 (enrichment chosen on one split, tested on the other) is
`verdicts.enrichment_verdict`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import stats
from .lens import chance_threshold, clip_critical_layers, critical_layer


def _halves(samples: list[str], seed: int) -> tuple[list[str], list[str]]:
    order = np.random.default_rng(seed).permutation(len(samples))
    half = len(samples) // 2
    return [samples[i] for i in order[:half]], [samples[i] for i in order[half:]]


def _curves(per: pd.DataFrame) -> pd.DataFrame:
    """Clips x layers of p(true) at the final position."""
    return per[per.position == "final"].pivot_table(index="sample", columns="layer", values="p_true")


def _answered(per: pd.DataFrame) -> pd.Series:
    """Per clip: is the model's own answer right (the lens' last layer where the answer column is absent)."""
    if "answer_correct" in per:
        return per.drop_duplicates("sample").set_index("sample")["answer_correct"].astype(bool)
    last = per[(per.position == "final") & (per.layer == per.layer.max())]
    return last.set_index("sample")["correct"] > 0.5


def rq1(cell: str, per: pd.DataFrame, seed: int) -> list[stats.Verdict]:
    """Information rises with depth (last layer vs layer 0), and dips on the way (a dip found on one half of the
    clips, tested on the other)."""
    c = _curves(per)
    first, last = c.columns.min(), c.columns.max()
    rise = stats.paired(f"{cell}: RQ1 p(true) at the final position rises with depth (layer {last} > layer {first})",
                        c[last], c[first], seed=seed).matters(stats.MIN_EFFECT["p_true"])  # fmt: skip
    search, test = _halves(list(c.index), seed)
    m = c.loc[search].mean().to_numpy()
    best, pair = 0.0, (first, first)
    for b in range(1, len(m)):  # the largest drop from any earlier layer's mean to a later one's
        a = int(np.argmax(m[:b]))
        if m[a] - m[b] > best:
            best, pair = m[a] - m[b], (c.columns[a], c.columns[b])
    a, b = pair
    dip = stats.paired(
        f"{cell}: RQ1 ...but not monotonically: p(true) falls from layer {a} to layer {b} (dip found on "
        f"{len(search)} clips, tested on the other {len(test)})",
        c.loc[test, a], c.loc[test, b], seed=seed,
    ).matters(stats.MIN_EFFECT["p_true"])  # fmt: skip
    return [rise, dip]


def rq2(cell: str, per: pd.DataFrame, seed: int) -> list[stats.Verdict]:
    """Failures' p(true) peaks mid-way and falls by the last layer; successes' keeps rising past that peak."""
    c = _curves(per)
    ok = _answered(per).reindex(c.index).fillna(False).astype(bool)
    last = c.columns.max()
    fail = list(c.index[~ok.to_numpy()])
    succeed = c.loc[ok.to_numpy()]
    if len(fail) < 2:  # no peak to find: say so rather than borrow one from the successes
        note = f"only {len(fail)} failure(s): no peak to find"
        return [
            stats.Verdict(f"{cell}: RQ2 failures' p(true) peaks mid-way and falls by layer {last}", float("nan"),
                          float("nan"), float("nan"), float("nan"), len(fail), "sign-flip permutation", note=note),
            stats.Verdict(f"{cell}: RQ2 successes' p(true) keeps rising past the failures' peak", float("nan"),
                          float("nan"), float("nan"), float("nan"), len(succeed), "sign-flip permutation", note=note),
        ]  # fmt: skip
    search, test = _halves(fail, seed)
    interior = list(c.columns[1:-1]) or list(c.columns[:-1])  # mid-way: neither the first nor the last layer
    peak = c.loc[search, interior].mean().idxmax()
    where = f"interior layers {interior[0]}..{interior[-1]}"
    m = stats.MIN_EFFECT["p_true"]
    return [
        stats.paired(f"{cell}: RQ2 failures' p(true) peaks mid-way (layer {peak} of {where}, found on {len(search)} "
                     f"failures) and falls by layer {last}", c.loc[test, peak], c.loc[test, last],
                     seed=seed).matters(m),
        stats.paired(f"{cell}: RQ2 successes' p(true) keeps rising past the failures' peak (layer {last} > {peak})",
                     succeed[last], succeed[peak], seed=seed).matters(m),
    ]  # fmt: skip


def rq2_curves(per: pd.DataFrame, seed: int, n_boot: int = 500) -> pd.DataFrame:
    """Mean p(true) per layer by answer correctness and label, with a bootstrap 95% CI over the clips."""
    c = _curves(per)
    ok = _answered(per).reindex(c.index).fillna(False).astype(bool)
    labels = per.drop_duplicates("sample").set_index("sample")["label"].reindex(c.index)
    rng = np.random.default_rng(seed)
    rows = []
    for (right, label), g in c.groupby([ok.to_numpy(), labels.to_numpy()]):
        for layer in c.columns:
            v = g[layer].to_numpy()
            lo, hi = stats.bootstrap_ci(v, n_boot, 0.95, rng)
            rows.append(dict(answer="success" if right else "failure", label=label, layer=int(layer),
                             p_true=float(v.mean()), lo=lo, hi=hi, n=len(v)))  # fmt: skip
    return pd.DataFrame(rows)


def rq3_clips(cell: str, per: pd.DataFrame, n_labels: int, alpha: float, weight: str, seed: int) -> stats.Verdict:
    """Within label, clips the model answers right have an earlier critical layer (of their own p(true) curve)."""
    clips = clip_critical_layers(per, n_labels, alpha, weight).set_index("sample")
    clips["right"] = _answered(per).reindex(clips.index).fillna(False).astype(bool)
    wrong, right = clips[~clips.right], clips[clips.right]
    v = stats.two_sample(
        f"{cell}: RQ3 within label, clips answered right resolve earlier (critical layer of wrong − right > 0)",
        wrong["critical_layer"], right["critical_layer"], wrong["label"], right["label"], seed=seed,
    ).matters(stats.MIN_EFFECT["layers"])  # fmt: skip
    never = int(clips["never_above_chance"].sum())
    timed = clips[clips["critical_layer"].notna()]
    shared = set(timed[timed.right]["label"]) & set(timed[~timed.right]["label"])
    alone = int((~timed["label"].isin(shared)).sum())
    dropped = [f"{never} clip(s) never above chance (no critical layer)"] if never else []
    if alone:
        dropped.append(f"{alone} clip(s) of labels answered all right or all wrong (no comparison within label)")
    if dropped:
        v.note = f"of {len(clips)} clips, left out: {'; '.join(dropped)}"
    return v


def rq3_cells(cells: pd.DataFrame, seed: int) -> stats.Verdict:
    """Across (track, format) cells: the earlier the critical layer, the higher the accuracy."""
    return stats.rank_correlation(
        f"RQ3 across {len(cells)} track x format cells: an earlier critical layer goes with higher accuracy "
        "(Spearman of -critical layer and accuracy)",
        -cells["critical_layer"].to_numpy(), cells["accuracy"].to_numpy(), seed=seed,
    ).matters(stats.MIN_EFFECT["correlation"])  # fmt: skip


def cell_row(track: str, fmt: str, per: pd.DataFrame, n_labels: int, alpha: float, weight: str) -> dict:
    """One (track, format) cell's accuracy and critical layer, for the across-cells test."""
    final = per[per.position == "final"].groupby("layer")["correct"].mean().sort_index()
    return dict(track=track, format=fmt, accuracy=float(final.iloc[-1]),
                critical_layer=critical_layer(final.to_numpy(), n_labels, alpha, weight),
                chance_threshold=chance_threshold(n_labels, alpha))  # fmt: skip


def rq4(track: str, knock: pd.DataFrame | None, patch_per_sample: pd.DataFrame | None, seed: int) -> list:
    """The final position reads the audio directly (knocking out final -> audio from the first layer lowers the
    answer's logit difference), the text positions relay it (text -> audio likewise), and at the last patched
    layer the final position carries the answer rather than the other text positions (Δ final − Δ text > 0)."""
    out = []
    if knock is not None and len(knock):
        lo = int(knock.start.min())
        for k, what in (("final->audio", "the final position reads the audio directly"),
                        ("text->audio", "the text positions relay the audio")):  # fmt: skip
            g = knock[(knock.knockout == k) & (knock.start == lo)]
            if len(g):
                out.append(stats.paired(
                    f"{track}: RQ4 {what}: blocking {k} from layer {lo} up lowers the answer's logit difference",
                    -g["logit_diff_change"], seed=seed,
                ).matters(stats.MIN_EFFECT["logit"]))  # fmt: skip
    if patch_per_sample is not None and len(patch_per_sample):
        hi = int(patch_per_sample.layer.max())
        last = patch_per_sample[patch_per_sample.layer == hi]
        out.append(stats.paired(
            f"{track}: RQ4 at layer {hi} the answer sits at the final position, not the other text positions "
            "(Δ final − Δ text > 0)", last["delta_final"], last["delta_text"], seed=seed,
        ).matters(stats.MIN_EFFECT["restoration"]))  # fmt: skip
    return out


def knockout_curves(knock: pd.DataFrame, seed: int, n_boot: int = 500) -> pd.DataFrame:
    """Per (knockout, start layer): mean change of the answer's logit difference and accuracy, with a 95% CI."""
    rng = np.random.default_rng(seed)
    rows = []
    for (k, start), g in knock.groupby(["knockout", "start"], sort=True):
        v = g["logit_diff_change"].to_numpy()
        lo, hi = stats.bootstrap_ci(v, n_boot, 0.95, rng)
        rows.append(dict(knockout=k, start=int(start), logit_diff_change=float(v.mean()), lo=lo, hi=hi,
                         acc_change=float(g["acc_change"].mean()), n=len(v)))  # fmt: skip
    return pd.DataFrame(rows)
