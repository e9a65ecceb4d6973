"""Grounding coefficient: how much of the answer the audio positions carry versus the text positions.

For each sample and layer, Delta_R is the normalized restoration of a metric when region R's clean
activations are patched into the corrupted run. Reported: Delta_audio, Delta_text, Delta_final; the
ratio GC = Delta_audio / Delta_text (flagged, not a number, where |Delta_text| < tol); the bounded share
S = Delta_audio / (|Delta_audio| + |Delta_text|); bootstrap confidence intervals over samples.
Formulas in docs/grounding.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .corrupt import Pair
from .errors import PatchlabError
from .models.base import HookedLALM
from .patching import patch, region_specs
from .stats import bootstrap_ci

REGIONS = ("audio", "text", "final")


def regions_for(pairs: Sequence[Pair]) -> tuple[str, ...]:
    """The regions grounding patches: audio, text and final, and `transcript` for models that write one."""
    heard = any(p.clean.regions[0].transcript for p in pairs)
    return ("audio", "transcript", "text", "final") if heard else REGIONS


@dataclass
class GroundingResult:
    """per_sample: (sample, layer, delta_*, share, gc, gc_flagged); per_layer and overall: means with CIs."""

    per_sample: pd.DataFrame
    per_layer: pd.DataFrame
    overall: dict
    metric: str
    tol: float


def share(d_audio: np.ndarray, d_text: np.ndarray) -> np.ndarray:
    """S = Delta_audio / (|Delta_audio| + |Delta_text|), in [-1, 1]; NaN where both are 0."""
    den = np.abs(d_audio) + np.abs(d_text)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, d_audio / np.where(den > 0, den, 1), np.nan)


def ratio(d_audio: np.ndarray, d_text: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """GC = Delta_audio / Delta_text, NaN and flagged where |Delta_text| < tol (the ratio would explode)."""
    flagged = np.abs(d_text) < tol
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(flagged, np.nan, d_audio / np.where(flagged, 1, d_text)), flagged


def _summarize(frame: pd.DataFrame, tol: float, n_boot: int, level: float, rng: np.random.Generator) -> dict:
    out: dict = {"n_samples": int(frame["sample"].nunique())}
    for col in [c for c in ("delta_audio", "delta_transcript", "delta_text", "delta_final", "share") if c in frame]:
        v = frame[col].to_numpy(dtype=float)
        out[col] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
        out[f"{col}_lo"], out[f"{col}_hi"] = bootstrap_ci(v, n_boot, level, rng)
    gc, flagged = ratio(np.array([out["delta_audio"]]), np.array([out["delta_text"]]), tol)
    out["gc"], out["gc_flagged"] = float(gc[0]), bool(flagged[0])
    return out


def grounding(
    table: pd.DataFrame,
    metric: str = "logit_diff",
    tol: float = 0.05,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    drop_unchanged: bool = False,
) -> GroundingResult:
    """Grounding statistics from a denoising patch table holding the audio, text and final regions per layer.

    Samples whose corruption left the metric unchanged make restoration undefined: an error, or with
    `drop_unchanged` they are left out and counted in overall["dropped"].
    """
    col = f"{metric}_restored"
    t = table[(table["direction"] == "denoise") & table["position"].isin((*REGIONS, "transcript"))]
    missing = set(REGIONS) - set(t["position"])
    if missing or col not in t:
        raise PatchlabError(
            f"the patch table lacks denoising rows for regions {sorted(missing)} or column {col!r}",
            "patch with patchlab.patching.region_specs(n_layers, ('audio', 'text', 'final'))",
        )
    same = t[np.isclose(t[f"clean_{metric}"], t[f"corrupt_{metric}"], atol=1e-9)]["sample"].unique()
    if len(same) and drop_unchanged:
        t = t[~t["sample"].isin(same)]
        if t.empty:
            raise PatchlabError(
                f"the corruption changed {metric} for none of the {len(same)} samples", "use another corruption"
            )
    elif len(same):
        raise PatchlabError(
            f"clean and corrupted runs give the same {metric} for {', '.join(map(str, same[:3]))}: the corruption "
            "changed nothing, so restoration (patched - corrupt) / (clean - corrupt) is undefined",
            "use a corruption that changes the answer (swap with a different label, noise), or drop those samples",
        )
    wide = t.pivot_table(index=["sample", "layer"], columns="position", values=col).reset_index()
    d_a, d_t = wide["audio"].to_numpy(), wide["text"].to_numpy()
    gc, flagged = ratio(d_a, d_t, tol)
    per = pd.DataFrame(
        {
            "sample": wide["sample"],
            "layer": wide["layer"],
            "delta_audio": d_a,
            "delta_text": d_t,
            "delta_final": wide["final"].to_numpy(),
            "share": share(d_a, d_t),
            "gc": gc,
            "gc_flagged": flagged,
        }
    )
    if "transcript" in wide:  # the words an ASR front end wrote into the prompt (DeSTA2): a region of their own
        per.insert(3, "delta_transcript", wide["transcript"].to_numpy())
    rng = np.random.default_rng(seed)
    per_layer = pd.DataFrame(
        [{"layer": la, **_summarize(g, tol, n_boot, level, rng)} for la, g in per.groupby("layer", sort=True)]
    )
    cols = [c for c in ("delta_audio", "delta_transcript", "delta_text", "delta_final", "share") if c in per]
    over = per.groupby("sample", as_index=False)[cols].mean()
    overall = _summarize(over, tol, n_boot, level, rng)
    overall.update(metric=metric, tol=tol, level=level, n_boot=n_boot, seed=seed, dropped=len(same))
    overall.update(handover(per, min(n_boot, 500), level, seed))
    for key, row in (("first_layer", per_layer.iloc[0]), ("last_layer", per_layer.iloc[-1])):
        overall[key] = {"layer": int(row["layer"]), **{k: float(v) for k, v in row.items() if k.startswith("delta")}}
    return GroundingResult(per, per_layer, overall, metric, tol)


def handover_layer(delta_audio: np.ndarray, delta_text: np.ndarray, layers: np.ndarray | None = None) -> float:
    """From per-layer mean Deltas (at `layers`, ascending; default 0, 1, ...): the first layer from which Delta_text
    exceeds Delta_audio at every later layer (the answer has moved from the audio to the text positions); NaN where
    audio still carries more at the last layer."""
    text_ahead = np.asarray(delta_text) > np.asarray(delta_audio)
    layers = np.arange(text_ahead.size) if layers is None else np.asarray(layers)
    if not text_ahead[-1]:
        return float("nan")
    behind = np.flatnonzero(~text_ahead)
    return float(layers[behind[-1] + 1] if behind.size else layers[0])


def handover(per_sample: pd.DataFrame, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """The handover layer of the mean curves and its percentile bootstrap CI over clips (resampled)."""
    wide_a = per_sample.pivot_table(index="sample", columns="layer", values="delta_audio")
    a, layers = wide_a.to_numpy(), wide_a.columns.to_numpy()
    t = per_sample.pivot_table(index="sample", columns="layer", values="delta_text").to_numpy()
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(a), size=(n_boot, len(a)))
    boot = np.array([handover_layer(np.nanmean(a[p], 0), np.nanmean(t[p], 0), layers) for p in picks])
    found = boot[np.isfinite(boot)]
    lo, hi = np.quantile(found, [(1 - level) / 2, (1 + level) / 2]) if found.size else (np.nan, np.nan)
    return {
        "handover_layer": handover_layer(np.nanmean(a, 0), np.nanmean(t, 0), layers),
        "handover_lo": float(lo),
        "handover_hi": float(hi),
        "handover_found_share": float(found.size / max(1, n_boot)),  # resamples in which a handover exists
    }


def ground(
    lalm: HookedLALM,
    pairs: Sequence[Pair],
    label_ids: Sequence[int],
    site: str = "resid_pre",
    metric: str = "logit_diff",
    tol: float = 0.05,
    n_boot: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> GroundingResult:
    """Patch the audio, text and final regions (and a transcript) at every layer; summarize them as grounding."""
    res = patch(lalm, pairs, region_specs(lalm.n_layers, regions_for(pairs), site), label_ids, progress=progress)
    return grounding(res.table, metric, tol, n_boot, seed=seed)
