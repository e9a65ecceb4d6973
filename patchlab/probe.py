"""Encoder probes: where in the audio encoder an attribute becomes linearly decodable, to set beside the decoder's
information scores (from the first encoder layer to the last decoder layer).

Per encoder layer, each clip's hidden states are mean-pooled over the frames that hold the clip (an encoder that
pads to a fixed window pads with silence), and a multinomial logistic regression (L2, fitted with L-BFGS on
standardized features) is scored by stratified k-fold cross-validation: the out-of-fold balanced accuracy, so a
label prior cannot fake it, with a bootstrap CI over clips. The saturation layer is the first layer whose score is
within `slack` of the best layer's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from .errors import PatchlabError
from .models.base import Batch, HookedLALM


def encoder_layers(lalm: HookedLALM) -> torch.nn.ModuleList:
    """The audio encoder's stack of layers (the ModuleList named `layers` or `layer` inside it)."""
    enc = lalm.adapter.audio_encoder(lalm.model)
    for name in ("layers", "layer", "blocks"):
        found = getattr(enc, name, None) if enc is not None else None
        if isinstance(found, torch.nn.ModuleList):
            return found
    raise PatchlabError(
        f"cannot find the audio encoder's layers in {lalm.family}",
        "give the adapter an audio_encoder(model) whose module holds a `layers` ModuleList",
    )


def pooled_states(lalm: HookedLALM, batch: Batch, seconds: float) -> np.ndarray:
    """(encoder layers, d): each layer's output mean-pooled over the frames that hold the clip (one clip)."""
    layers = encoder_layers(lalm)
    out: list[torch.Tensor | None] = [None] * len(layers)

    def keep(i):
        def hook(mod, args, output):
            h = output[0] if isinstance(output, tuple) else output
            window = lalm.adapter.max_seconds
            frames = h.shape[1] if not window else max(1, math.ceil(h.shape[1] * min(1.0, seconds / window)))
            out[i] = h[0, :frames].double().mean(0).cpu()

        return hook

    handles = [layer.register_forward_hook(keep(i)) for i, layer in enumerate(layers)]
    try:
        with torch.no_grad(), lalm.encoder_memo.fresh():
            lalm.model(**batch.to(lalm.device, lalm.dtype).tensors, use_cache=False, logits_to_keep=1)
    finally:
        for h in handles:
            h.remove()
    return torch.stack(out).numpy()  # type: ignore[arg-type]


def _fit_predict(x: np.ndarray, y: np.ndarray, test: np.ndarray, n_classes: int, l2: float) -> np.ndarray:
    """Multinomial logistic regression fitted on x, y (standardized on x); class predictions for `test`."""
    mu, sd = x.mean(0), x.std(0) + 1e-8
    xt = torch.tensor((x - mu) / sd)
    w = torch.zeros(x.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    target = torch.tensor(y)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w + b, target) + l2 * (w**2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return (torch.tensor((test - mu) / sd) @ w + b).argmax(1).numpy()


def folds(labels: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """Stratified k folds: each label's clips dealt round-robin in a seeded order."""
    rng = np.random.default_rng(seed)
    out: list[list[int]] = [[] for _ in range(k)]
    for la in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == la))
        for j, i in enumerate(idx):
            out[j % k].append(int(i))
    return [np.array(sorted(f), dtype=int) for f in out if f]


def _balanced(right: np.ndarray, y: np.ndarray, idx: np.ndarray) -> float:
    """Mean per-label recall over the clips `idx` (a resample may repeat clips)."""
    return float(np.mean([right[idx][y[idx] == c].mean() for c in np.unique(y[idx])]))


def probe_scores(
    states: pd.DataFrame, k: int = 5, l2: float = 1e-2, seed: int = 0, n_boot: int = 500, slack: float = 0.02
) -> tuple[pd.DataFrame, dict]:
    """Per encoder layer: out-of-fold balanced accuracy of a linear probe with a bootstrap 95% CI over clips.

    `states` rows: sample, label, encoder_layer, f0..f{d-1}. Returns (per-layer table, summary with the
    saturation layer and chance).
    """
    feats = [c for c in states.columns if c.startswith("f") and c[1:].isdigit()]
    labels_all = sorted(states["label"].unique())
    if len(labels_all) < 2:
        raise PatchlabError("a probe needs clips of at least two labels", "run it on more clips of the track")
    rows, last_right = [], {}
    rng = np.random.default_rng(seed)
    for layer, g in states.groupby("encoder_layer", sort=True):
        g = g.sort_values("sample")
        y = np.array([labels_all.index(la) for la in g["label"]])
        x = g[feats].to_numpy(dtype=float)
        kk = min(k, int(np.bincount(y).min())) if np.bincount(y).min() >= 2 else 0
        if kk < 2:
            rows.append(dict(encoder_layer=int(layer), balanced_accuracy=float("nan"), lo=float("nan"),
                             hi=float("nan"), n=len(y)))  # fmt: skip
            continue
        pred = np.empty_like(y)
        for test in folds(y, kk, seed):
            train = np.setdiff1d(np.arange(len(y)), test)
            pred[test] = _fit_predict(x[train], y[train], x[test], len(labels_all), l2)
        right = pred == y
        last_right = dict(zip(g["sample"], right.tolist()))

        boots = [_balanced(right, y, rng.integers(0, len(y), len(y))) for _ in range(n_boot)]
        lo, hi = np.quantile(boots, [0.025, 0.975])
        score = _balanced(right, y, np.arange(len(y)))
        rows.append(dict(encoder_layer=int(layer), balanced_accuracy=score, lo=float(lo), hi=float(hi), n=len(y)))
    table = pd.DataFrame(rows)
    score = table["balanced_accuracy"].to_numpy()
    ok = np.isfinite(score)
    saturation = float("nan")
    if ok.any():
        saturation = float(table["encoder_layer"][ok & (score >= np.nanmax(score) - slack)].iloc[0])
    return table, {"saturation_layer": saturation, "best": float(np.nanmax(score)) if ok.any() else float("nan"),
                   "chance": 1.0 / len(labels_all), "folds": k, "l2": l2, "slack": slack,
                   "last_layer_correct": last_right}  # fmt: skip


def state_rows(sample: str, label: str, states: np.ndarray) -> list[dict]:
    """Tidy rows of one clip's pooled states: one row per encoder layer, feature columns f0.."""
    return [
        {"sample": sample, "label": label, "encoder_layer": i, **{f"f{j}": float(v) for j, v in enumerate(row)}}
        for i, row in enumerate(states)
    ]


def probe_clips(lalm: HookedLALM, clips: Sequence[tuple[str, str, Batch, float]]) -> pd.DataFrame:
    """Pooled encoder states of (sample, label, prepared batch, seconds) clips, as tidy rows."""
    rows = []
    for sample, label, batch, seconds in clips:
        rows += state_rows(sample, label, pooled_states(lalm, batch, seconds))
    return pd.DataFrame(rows)
