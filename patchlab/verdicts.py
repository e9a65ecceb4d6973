"""The verdicts a run's report leads with: each claim its tables can test, with effect, CI, p, Holm-corrected p,
n and `supported` / `refuted` / `inconclusive` (too few clips is always inconclusive)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import stats
from .lens import critical_layer


def lens_verdict(track: str, fmt: str, per: pd.DataFrame, n_labels: int) -> stats.Verdict:
    """The answer is decodable (argmax over the label set is right) at the final position of the last layer, more
    often than a constant guess would be: the baseline is the larger of 1/|Y| and the most frequent label's share
    of the clips (a model that cannot hear and always names the majority label scores exactly that)."""
    last = per[(per.position == "final") & (per.layer == per.layer.max())]
    prior = last["label"].value_counts(normalize=True).max() if "label" in last and len(last) else 0.0
    return stats.above_chance(
        f"{track} [{fmt}]: the label is decodable at the final position, last layer, above a constant guess",
        last["correct"].to_numpy() > 0.5,
        max(1.0 / n_labels, float(prior)),
    ).matters(stats.MIN_EFFECT["accuracy"])


def lens_accuracy_ci(per: pd.DataFrame, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Wilson interval of the lens accuracy at the final position, last layer (the clips the verdict
    counts; it contains the accuracy the summary prints)."""
    last = per[(per.position == "final") & (per.layer == per.layer.max())]
    if not len(last):
        return float("nan"), float("nan")
    return stats.wilson(int((last["correct"].to_numpy() > 0.5).sum()), len(last), level)


def critical_layer_ci(
    per: pd.DataFrame, n_labels: int, alpha: float, weight: str, n_boot: int = 500, seed: int = 0
) -> tuple[float, float]:
    """95% interval over clips of the final position's critical layer: the basic bootstrap (2 x estimate minus the
    resamples' quantiles), widened to hold the estimate.

    The critical layer of a sample's mean curve is biased toward early layers at small n (chance-level noise above
    tau adds weight there), and a percentile bootstrap repeats that bias: it covered the population's critical
    layer 2% / 24% / 83% of the time at n = 8 / 24 / 150 in tests/test_coverage.py's simulation. The basic bootstrap
    turns the resamples' bias back (81% / 93% / 93% there: docs/statistics.md)."""
    m = per[per.position == "final"].pivot_table(index="sample", columns="layer", values="correct").to_numpy()
    est = critical_layer(m.mean(0), n_labels, alpha, weight)
    rng = np.random.default_rng(seed)
    boot = np.array(
        [critical_layer(m[p].mean(0), n_labels, alpha, weight) for p in rng.integers(0, len(m), (n_boot, len(m)))]
    )
    boot = boot[np.isfinite(boot)]
    if not boot.size or not np.isfinite(est):
        return float("nan"), float("nan")
    q_lo, q_hi = np.quantile(boot, [0.025, 0.975])
    top = m.shape[1] - 1  # a critical layer lies between the first layer and the last
    return float(max(0, min(est, 2 * est - q_hi))), float(min(top, max(est, 2 * est - q_lo)))


IDENTITY_TOL = 1e-3  # every clip within this of 1 is the clean run recreated (float32 rounding over a small logit gap
# moves a float32 run's restoration by up to 3e-4; a real effect does not put every clip this close to 1)


def grounding_verdicts(track: str, per_sample: pd.DataFrame, seed: int) -> list[stats.Verdict]:
    """Audio restores the answer at the first patched layer; at the last the final position carries more."""
    lo, hi = int(per_sample.layer.min()), int(per_sample.layer.max())
    first, last = per_sample[per_sample.layer == lo], per_sample[per_sample.layer == hi]
    m = stats.MIN_EFFECT["restoration"]
    restores = stats.paired(f"{track}: clean audio patched in at layer {lo} restores the answer (Δ audio > 0)",
                            first["delta_audio"], seed=seed).matters(m)  # fmt: skip
    d = first["delta_audio"].dropna().to_numpy(float)
    if d.size and np.allclose(d, 1.0, rtol=0, atol=IDENTITY_TOL):
        restores.sanity(f"an identity on this model: the audio patched at layer {lo} recreates the clean run (every "
                        f"clip restores 1 within {IDENTITY_TOL:g})")  # fmt: skip
    return [
        restores,
        stats.paired(f"{track}: at layer {hi} the final position carries the answer, not the audio "
                     "(Δ final − Δ audio > 0)", last["delta_final"], last["delta_audio"], seed=seed).matters(m),
    ]  # fmt: skip


def cue_verdict(track: str, cue: pd.DataFrame, seed: int) -> stats.Verdict:
    """Listens: with a conflicting text cue, the answer follows the audio more often than the cue (paired by clip)."""
    c = cue[cue.condition == "conflict"]
    return stats.paired(
        f"{track}: with a conflicting text cue the model follows the audio, not the cue",
        c["follows_audio"].astype(float),
        c["follows_cue"].astype(float),
        seed=seed,
    ).matters(stats.MIN_EFFECT["accuracy"])


def enrichment_verdict(track: str, rows: pd.DataFrame, choice: dict, held_out: list[str], seed: int) -> stats.Verdict:
    """The enrichment chosen on the search clips raises accuracy on the held-out clips (paired by clip)."""
    h = rows[rows["sample"].isin(held_out)]
    pick = h[(h.early == choice["early"]) & (h.deep == choice["deep"]) & (h.c.astype(str) == str(choice["c"]))]
    pick = pick.set_index("sample")
    return stats.paired(
        f"{track}: enrichment {choice['early']}→{choice['deep']} (c={choice['c']}), chosen on "
        f"{choice['search_samples']} clips, raises held-out accuracy",
        pick["correct"].astype(float),
        pick["base_correct"].astype(float),
        seed=seed,
    ).matters(stats.MIN_EFFECT["accuracy"])


def table(verdicts: list[tuple[str, stats.Verdict]]) -> pd.DataFrame:
    """Holm over the run's family of tests, then one tidy row per verdict (track first)."""
    stats.decide([v for _, v in verdicts])
    rows = [{"track": t, **v.as_row()} for t, v in verdicts]
    cols = [
        "track",
        "hypothesis",
        "kind",
        "verdict",
        "effect",
        "ci_lo",
        "ci_hi",
        "min_effect",
        "p",
        "p_corrected",
        "n",
        "n_needed",
        "test",
        "note",
    ]
    return pd.DataFrame(rows, columns=cols)
