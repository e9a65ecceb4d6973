"""AudioLens' training-free enrichment: mix an earlier layer's state into a deeper one at the final position.

h_deep <- h_deep + c * h_early (or their mean, c = "mean"), where h_l is the residual stream entering layer l.
Every (early, deep, c) of a grid runs in one batched forward of the final position only, as steering additions
(patchlab.steering): resumed at the lowest deep layer from the recorded clean run, attending to its keys/values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .errors import PatchlabError, nonfinite_fix
from .models.base import Batch, HookedLALM
from .record import clean_run
from .steering import Addition, steered_logits


@dataclass(frozen=True)
class Enrichment:
    early: int
    deep: int
    c: float | str  # a coefficient, or "mean" for (h_deep + h_early) / 2

    @property
    def name(self) -> str:
        return f"{self.early}->{self.deep} c={self.c}"

    def addition(self, early_state: torch.Tensor) -> Addition:
        """This enrichment as a steering addition of the clip's own earlier state (c = "mean": keep and alpha 1/2)."""
        mean = self.c == "mean"
        return Addition(self.deep, 0.5 if mean else float(self.c), early_state, 0.5 if mean else 1.0)


def grid(n_layers: int, coefficients: Sequence[float | str] = (0.5, 1.0, "mean"), step: int | None = None) -> list:
    """Early layers from the first third on, deep layers in the last third, every coefficient."""
    step = step or max(1, n_layers // 10)
    deeps = range(n_layers - 1, 2 * n_layers // 3 - 1, -step)
    earlies = range(n_layers // 3, n_layers - 1, step)
    return [Enrichment(e, d, c) for d in deeps for e in earlies if e < d for c in coefficients]


def enriched_logits(
    lalm: HookedLALM, batch: Batch, combos: Sequence[Enrichment], label_ids: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Label-set logits at the final position: (the unedited run, (len(combos), |Y|) with each combo applied), each
    combo a steering addition of the clip's own earlier state (c = "mean": keep and alpha 1/2)."""
    clean = clean_run(lalm, batch).cache
    base = clean.final_logits[0, list(label_ids)]
    additions = [c.addition(clean[("resid_pre", c.early)][0, -1]) for c in combos]
    return base, steered_logits(lalm, batch, additions, label_ids)


def enrichment_rows(lalm: HookedLALM, batch: Batch, combos: Sequence[Enrichment], label_ids, truth: int) -> list:
    """One row per combo: whether the enriched and the plain run pick the true label, and the enriched margin."""
    base, out = enriched_logits(lalm, batch, combos, label_ids)
    if not torch.isfinite(out).all():
        raise PatchlabError(
            f"NaN/inf in the enriched runs of {batch.meta[0].get('id', '?')} (in {lalm.dtype})",
            nonfinite_fix(lalm.dtype),
        )
    others = [i for i in range(len(label_ids)) if i != truth]
    margin = out[:, truth] - out[:, others].max(-1).values
    return [
        dict(
            sample=batch.meta[0]["id"],
            early=c.early,
            deep=c.deep,
            c=str(c.c),
            correct=bool(out[r].argmax() == truth),
            base_correct=bool(base.argmax() == truth),
            margin=float(margin[r]),
        )
        for r, c in enumerate(combos)
    ]


def search_split(rows: pd.DataFrame, split: float = 0.5, seed: int = 0) -> tuple[set, list[str]]:
    """The seeded split of samples: (those the setting is searched on, the held-out rest in sample order)."""
    samples = sorted(rows["sample"].unique())
    order = np.random.default_rng(seed).permutation(len(samples))
    n_search = max(1, int(round(split * len(samples))))
    chosen = {samples[i] for i in order[:n_search]}
    return chosen, [s for s in samples if s not in chosen]


def search(rows: pd.DataFrame, split: float = 0.5, seed: int = 0) -> dict:
    """Pick (early, deep, c) by accuracy (then margin) on a seeded split of samples; report on the held-out rest."""
    chosen, _ = search_split(rows, split, seed)
    n_search = len(chosen)
    fit, held = rows[rows["sample"].isin(chosen)], rows[~rows["sample"].isin(chosen)]
    score = fit.groupby(["early", "deep", "c"])[["correct", "margin"]].mean().reset_index()
    best = score.sort_values(["correct", "margin", "deep", "early"], ascending=[False, False, True, True]).iloc[0]
    pick = held[(held.early == best.early) & (held.deep == best.deep) & (held.c == best.c)]
    base = held.groupby("sample")["base_correct"].first()
    return dict(
        early=int(best.early),
        deep=int(best.deep),
        c=best.c,
        search_samples=n_search,
        heldout_samples=int(base.size),
        search_accuracy_base=float(fit.groupby("sample")["base_correct"].first().mean()),
        search_accuracy_enriched=float(best.correct),
        heldout_accuracy_base=float(base.mean()) if base.size else float("nan"),
        heldout_accuracy_enriched=float(pick["correct"].mean()) if len(pick) else float("nan"),
        heldout_change=float(pick["correct"].mean() - base.mean()) if base.size else float("nan"),
    )
