"""Screen, then verify: grounding over a whole dataset from attribution patching on every clip, checked and
corrected by real region patching on a seeded random share of the clips and on every clip whose gap is small.

For each clip and layer, a region's AtP estimate of its restoration is the sum over the region's positions of
(a_clean - a_corrupt) . d logit_diff / d a at resid_pre (one corrupted forward and one backward per clip), divided
by clean - corrupt: the first-order version of exactly what real region patching measures. A clip is verified
(also patched for real) when a hash of (seed, clip id) falls below the verified share: the same clips whatever the
sharding. A restoration is a ratio over the clip's gap (clean - corrupt logit difference), so clips with a small
gap are the heavy tail of every per-layer mean: those (|gap| < small_gap) form a take-all stratum, all patched for
real. Per layer and region the estimate over all clips weighs that stratum's real mean with, over the other clips,
survey sampling's regression estimator mean_verified(real) + b (mean_all(AtP) - mean_verified(AtP)), b the
least-squares slope of real on AtP over the verified clips: it uses AtP as far as AtP tracks real patching and no
further (b = 1 would be the difference estimator, which a mis-scaled AtP over 60 audio positions biases; b = 0 the
verified clips alone), with a normal 95% interval from the difference estimator's (larger) standard error (the
take-all stratum has none). Agreement is the Spearman rank correlation and the largest error of AtP against real
patching over the verified cells.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import nullcontext

import numpy as np
import pandas as pd
import torch
from scipy import stats

from .corrupt import Pair
from .data import draw_key
from .metrics import final_metrics
from .models.base import HookedLALM
from .patching.attribution import _corrupt_with_grads, linear_effects
from .record import clean_run


def verified(sample: str, share: float, seed: int) -> bool:
    """Whether a clip is among the verified share (a hash of seed and id: independent of sharding and order)."""
    h = hashlib.sha256(f"{seed}/{draw_key(sample)}".encode()).digest()
    return int.from_bytes(h[:8], "little") / 2**64 < share


def to_verify(sample: str, gap: float | None, share: float, seed: int, small_gap: float) -> bool:
    """Whether a screened clip is patched for real: in the seeded share, or its gap is small (take-all stratum)."""
    return verified(sample, share, seed) or (gap is not None and abs(gap) < small_gap)


def region_atp(lalm: HookedLALM, pair: Pair, label_ids: Sequence[int], regions: Sequence[str]) -> pd.DataFrame:
    """AtP estimates of each region's restored logit difference at every layer (resid_pre, denoising), with the
    clip's gap (clean - corrupt logit difference) that divides them."""
    clean = clean_run(lalm, pair.clean).cache
    lo = clean.final_logits
    clean_metric = float(final_metrics(lo, label_ids, pair.label, lo)["logit_diff"][0])
    acts, _, corrupt_metric = _corrupt_with_grads(lalm, pair, ["resid_pre"], label_ids, nullcontext())
    den = clean_metric - corrupt_metric
    r = pair.clean.regions[0]
    rows = []
    with torch.no_grad():
        for (_, layer), a in sorted(acts.items(), key=lambda kv: kv[0][1]):
            per_pos = linear_effects(clean, "resid_pre", layer, a)
            for region in regions:
                est = float(per_pos[list(r.positions(region))].sum())
                restored = est / den if abs(den) > 1e-6 else float("nan")
                rows.append(dict(sample=pair.sample, layer=layer, position=region, atp_restored=restored, gap=den))
    return pd.DataFrame(rows)


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The regression estimator's slope of real on AtP over the verified clips and its residual variance (nan with
    fewer than 3 clips: no interval from so few)."""
    n = len(y)
    if n < 3:
        return (0.0 if n else np.nan), np.nan
    slope = float(np.cov(x, y)[0, 1] / x.var(ddof=1)) if x.var() > 1e-12 else 0.0
    resid = y - y.mean() - slope * (x - x.mean())
    return slope, float((resid**2).sum() / (n - 2))


CELL = ["sample", "layer", "position"]


def _joined(atp: pd.DataFrame, real: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Real patching's restored logit difference per (clip, layer, region), from its denoising resid_pre rows (what
    AtP estimates; empty when no clip was patched), and those rows joined to the AtP rows of the same cells."""
    if "direction" in real:
        real = real[(real["direction"] == "denoise") & (real["site"] == "resid_pre")]
    real = real.reindex(columns=[*CELL, "logit_diff_restored"]).dropna()
    both = atp.merge(real, on=CELL, how="inner").dropna(subset=["atp_restored", "logit_diff_restored"])
    return real, both


def _cells(atp: pd.DataFrame, real: pd.DataFrame, both: pd.DataFrame, small_gap: float) -> Iterator[tuple]:
    """Per (layer, region): the take-all stratum's real restorations, the rest's AtP, and the verified rest's AtP
    and real restorations (x, y); `real` and `both` as `_joined` gives them."""
    small = atp["gap"].abs() < small_gap
    for (layer, region), g in atp.groupby(["layer", "position"], sort=True):
        cell = (real.layer == layer) & (real.position == region)
        taken = real[cell & real["sample"].isin(g.loc[small[g.index], "sample"])]["logit_diff_restored"]
        rest = g[~small[g.index]].dropna(subset=["atp_restored"])
        v = both[(both.layer == layer) & (both.position == region) & both["sample"].isin(rest["sample"])]
        yield layer, region, g, taken, rest, v["atp_restored"].to_numpy(), v["logit_diff_restored"].to_numpy()


def _quantile(level: float, n_ver: int) -> float:
    """Student's t quantile of a two-sided interval at `level` on the residuals' n_ver - 2 degrees of freedom."""
    return float(stats.t.ppf((1 + level) / 2, n_ver - 2)) if n_ver > 2 else np.nan


def estimate(
    atp: pd.DataFrame, real: pd.DataFrame, level: float = 0.95, small_gap: float = 0.0
) -> tuple[pd.DataFrame, dict]:
    """Per (layer, region): the stratified estimate of the mean restoration over all screened clips (take-all stratum
    |gap| < small_gap, regression estimator over the rest) and its interval; and the agreement of AtP with real
    patching over the verified (clip, region, layer) cells.

    The interval is for what real patching of every screened clip would give (a finite population): the regression
    residuals' variance with the finite-population correction, so it closes as the verified share grows to all."""
    real, both = _joined(atp, real)
    rows = []
    for layer, region, g, taken, rest, x, y in _cells(atp, real, both, small_gap):
        n_rest, n_ver, n_taken = len(rest), len(y), len(taken)
        n = n_rest + n_taken
        if n_rest:
            slope, s2 = _fit(x, y)
            est_rest = y.mean() + slope * (rest["atp_restored"].mean() - x.mean()) if n_ver else np.nan
            se_rest = np.sqrt(max(0.0, 1 - n_ver / n_rest) * s2 / n_ver) if n_ver else np.nan
            est, half = (taken.sum() + n_rest * est_rest) / n, _quantile(level, n_ver) * n_rest / n * se_rest
            if n_ver == n_rest:  # every clip verified: real patching's mean, no sampling error
                half = 0.0
        else:  # every clip in the take-all stratum: real patching's mean, no sampling error
            slope, est, half = np.nan, (taken.mean() if n_taken else np.nan), 0.0
        rows.append(dict(layer=layer, position=region, estimate=est, lo=est - half, hi=est + half,
                         atp_mean=g["atp_restored"].mean(), slope=slope, n_screened=n,
                         n_verified=n_ver + n_taken, n_take_all=n_taken))  # fmt: skip
    err = (both["atp_restored"] - both["logit_diff_restored"]).abs()
    rho = stats.spearmanr(both["atp_restored"], both["logit_diff_restored"]).statistic if len(both) > 2 else np.nan
    agreement = {
        "n_clips_screened": int(atp["sample"].nunique()),
        "n_clips_verified": int(both["sample"].nunique()),
        "spearman": float(rho),
        "max_abs_error": float(err.max()) if len(err) else float("nan"),
        "mean_abs_error": float(err.mean()) if len(err) else float("nan"),
    }
    return pd.DataFrame(rows), agreement


def topup_shares(
    atp: pd.DataFrame, real: pd.DataFrame, share: float, small_gap: float, tol: float, level: float = 0.95
) -> dict[str, float]:
    """Per region: the verified share that brings every layer's interval half-width within `tol` (two-phase
    sampling: the first phase's residual variance decides the second phase's size), at least `share`; 1 where
    the first phase verified too few clips to tell."""
    need: dict[str, float] = {}
    for _, region, _, taken, rest, x, y in _cells(atp, *_joined(atp, real), small_gap):
        n_rest, n = len(rest), len(rest) + len(taken)
        _, s2 = _fit(x, y)
        if not n_rest:
            frac = share
        elif not np.isfinite(s2):
            frac = 1.0
        else:  # half = q (n_rest/n) sqrt((1/m - 1/n_rest) s2) <= tol  <=>  m >= 1 / (c / s2 + 1 / n_rest)
            c = (tol * n / (_quantile(level, len(y)) * n_rest)) ** 2
            frac = np.ceil(1.0 / (c / max(s2, 1e-300) + 1.0 / n_rest) - 1e-9) / n_rest  # whole clips
        need[region] = max(need.get(region, share), min(1.0, frac))
    return need


def topup(gaps: pd.Series, shares: dict[str, float], share: float, seed: int, small_gap: float) -> dict[str, tuple]:
    """The second phase: each screened clip not patched for real yet, and the regions it is now verified for (the
    same seeded hash against each region's larger share, so every region's verified clips stay a random sample)."""
    out = {}
    for sample, gap in gaps.items():
        if to_verify(str(sample), gap, share, seed, small_gap):
            continue
        regions = tuple(r for r, s in shares.items() if verified(str(sample), s, seed))
        if regions:
            out[str(sample)] = regions
    return out
