"""Logit lens (AudioLens): label-set logits at every (layer, position), information scores, critical layers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .answer import option_choice
from .data import LabelSet, Sample, build_prompt, label_set, labels_of, load_clip
from .errors import PatchlabError, nonfinite_fix
from .hooks import hooked
from .metrics import wide
from .models.base import Batch, HookedLALM
from .tuned import Translators

WEIGHTS = ("excess", "score")


def lens_logits(
    lalm: HookedLALM, batch: Batch, token_ids: Sequence[int] | None = None, translators: Translators | None = None
) -> torch.Tensor:
    """Residual stream after each layer through the final norm and unembedding, in one forward (through each layer's
    translator first for the tuned lens).

    Returns (layers, batch, positions, vocab) or, with `token_ids`, only those vocabulary columns.
    The last layer's row equals the model's own logits (transformers applies the final norm once, as here).
    """
    rows = None if token_ids is None else torch.tensor(list(token_ids), device=lalm.device)
    out: list[torch.Tensor | None] = [None] * lalm.n_layers
    read = (lambda h, la: h) if translators is None else translators
    reads = {
        ("resid_post", la): (lambda h, la=la: out.__setitem__(la, wide(lalm.unembed(read(h, la), rows)).cpu()))
        for la in range(lalm.n_layers)
    }
    with torch.no_grad(), hooked(lalm, reads=reads):
        lalm.model(**batch.to(lalm.device, lalm.dtype).tensors, use_cache=False, logits_to_keep=1)
    return torch.stack(out)  # type: ignore[arg-type]


def check_finite_logits(logits: torch.Tensor, sample: str, dtype: torch.dtype) -> None:
    """A NaN/inf label logit has no argmax: an error naming the clip and the first layer, never a prediction."""
    bad = ~torch.isfinite(logits).reshape(logits.shape[0], -1).all(1)
    if bad.any():
        raise PatchlabError(
            f"NaN/inf in the logit lens of {sample} from layer {int(bad.nonzero()[0])} on, in {dtype}",
            nonfinite_fix(dtype),
        )


def chance_threshold(n_labels: int, alpha: float = 0.2) -> float:
    """tau = (1 + alpha) / |Y|: scores at or below it count as chance."""
    return (1.0 + alpha) / n_labels


def critical_layer(scores: Sequence[float], n_labels: int, alpha: float = 0.2, weight: str = "excess") -> float:
    """AudioLens' critical layer: mean layer index weighted by how far each layer's score exceeds chance.

    weight='excess' uses I - tau, weight='score' uses I, both zero at or below tau. NaN if no layer exceeds tau.
    """
    if weight not in WEIGHTS:
        raise PatchlabError(f"unknown critical-layer weight {weight!r}", f"use one of {', '.join(WEIGHTS)}")
    s = np.asarray(scores, dtype=float)
    tau = chance_threshold(n_labels, alpha)
    above = s > tau
    w = np.where(above, s - tau if weight == "excess" else s, 0.0)
    if w.sum() <= 0:
        return float("nan")
    return float((np.arange(len(s)) * w).sum() / w.sum())


ONE_LABEL = 0.9  # a (layer, position) where one label is the lens argmax for at least this share of clips is flagged


def information_scores(per_sample: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """I(l, i): the mean correctness over samples per (*by, layer, position), as a tidy `score` column (AudioLens).

    Beside it, measures a label prior cannot fake: `balanced_score` (the mean over labels of each label's mean
    correctness, chance = 1/|Y| whatever the label mix), `rank_score` (the same balance of the true label's
    normalized rank, (|Y| - rank) / (|Y| - 1): 1 always first, 0.5 for any fixed label order), `p_true` (mean
    label-set probability of the truth), `top_label_share` (the share of clips whose lens argmax is the most
    frequent label, single positions only) and `one_label_wins` (that share >= 0.9 with two labels present).
    """
    keys = [*by, "layer", "position"]
    scores = per_sample.groupby(keys, sort=False, as_index=False)["correct"].mean()
    scores = scores.rename(columns={"correct": "score"})
    if "label" not in per_sample:  # rows from before the lens recorded labels and predictions
        return scores
    per_label = per_sample.groupby([*keys, "label"], sort=False)["correct"].mean()
    balanced = per_label.groupby(level=list(range(len(keys))), sort=False).mean().rename("balanced_score")
    scores = scores.join(balanced, on=keys)
    if "rank" in per_sample:
        k = np.maximum(per_sample["n_labels"], 2)
        norm = per_sample.assign(rank_score=(k - per_sample["rank"]) / (k - 1))
        per_label = norm.groupby([*keys, "label"], sort=False)["rank_score"].mean()
        rank = per_label.groupby(level=list(range(len(keys))), sort=False).mean().rename("rank_score")
        p_true = per_sample.groupby(keys, sort=False)["p_true"].mean().rename("p_true")
        scores = scores.join(rank, on=keys).join(p_true, on=keys)
    preds = per_sample[per_sample["pred"].fillna("").astype(str) != ""]  # single positions ("" or NaN: a group)
    top = preds.groupby(keys, sort=False)["pred"].agg(lambda p: p.value_counts(normalize=True).iloc[0])
    scores = scores.join(top.rename("top_label_share"), on=keys)
    two_labels = per_sample.groupby(keys, sort=False)["label"].nunique().rename("n_labels_present")
    scores = scores.join(two_labels, on=keys)
    scores["one_label_wins"] = (scores["top_label_share"] >= ONE_LABEL) & (scores.pop("n_labels_present") >= 2)
    return scores


def clip_critical_layers(
    per_sample: pd.DataFrame, n_labels: int, alpha: float = 0.2, weight: str = "excess", position: str = "final"
) -> pd.DataFrame:
    """Per clip at `position`: the critical layer of its own p(true) curve (NaN, and `never_above_chance`, where
    p(true) never exceeds tau), the first layer above tau, its label and whether its last layer is right."""
    at = per_sample[per_sample.position == position]
    tau = chance_threshold(n_labels, alpha)
    rows = []
    for sample, g in at.groupby("sample", sort=False):
        g = g.sort_values("layer")
        curve = g["p_true"].to_numpy()
        above = np.flatnonzero(curve > tau)
        rows.append(
            {"sample": sample, "label": g["label"].iloc[0], "correct": bool(g["correct"].iloc[-1] > 0.5),
             "critical_layer": critical_layer(curve, n_labels, alpha, weight),
             "first_layer_above_chance": float(g["layer"].iloc[above[0]]) if above.size else float("nan"),
             "never_above_chance": not above.size}
        )  # fmt: skip
    return pd.DataFrame(rows)


def clip_critical_depths(
    per_sample: pd.DataFrame, n_labels: int, alpha: float = 0.2, weight: str = "excess"
) -> pd.DataFrame:
    """Per clip: its critical layer at the final position (`clip_critical_layers`) and that layer as a share of the
    depth (0 = first layer, 1 = last), so that models or tracks read out at different depths compare."""
    clips = clip_critical_layers(per_sample, n_labels, alpha, weight)
    top = max(1, int(per_sample["layer"].max()))
    return clips[["sample", "critical_layer"]].assign(critical_depth=clips["critical_layer"] / top)


def label_critical_layers(
    per_sample: pd.DataFrame, n_labels: int, alpha: float = 0.2, weight: str = "excess", position: str = "final"
) -> dict[str, float]:
    """The critical layer of each label's own information-score curve (the clips of that label only)."""
    at = per_sample[per_sample.position == position]
    curves = at.groupby(["label", "layer"])["correct"].mean()
    return {
        str(la): critical_layer(c.sort_index().to_numpy(), n_labels, alpha, weight) for la, c in curves.groupby(level=0)
    }


def critical_layers(scores: pd.DataFrame, n_labels: int, alpha: float = 0.2, weight: str = "excess") -> dict:
    """The critical layer of every position group of one (track, format)'s information scores."""
    return {
        pos: critical_layer(g.sort_values("layer")["score"].to_numpy(), n_labels, alpha, weight)
        for pos, g in scores.groupby("position", sort=False)
    }


def score_matrix(scores: pd.DataFrame) -> pd.DataFrame:
    """Scores as a layers x positions table (position columns in address order)."""
    order = list(dict.fromkeys(scores["position"]))
    return scores.pivot(index="layer", columns="position", values="score")[order]


@dataclass
class LensResult:
    """Information scores (tidy: layer, position, score), per-sample correctness, accuracy, critical layers."""

    scores: pd.DataFrame
    per_sample: pd.DataFrame
    labels: LabelSet
    accuracy: float
    critical_layers: dict[str, float]
    n_layers: int
    alpha: float
    weight: str
    meta: dict = field(default_factory=dict)
    clips: pd.DataFrame = field(default_factory=pd.DataFrame)  # per clip: critical layer of its p(true), ...

    def matrix(self) -> pd.DataFrame:
        """Scores as a layers x positions table (position columns in address order)."""
        return score_matrix(self.scores)

    def summary(self) -> dict:
        final = self.scores[self.scores.position == "final"].sort_values("layer")
        answered = self.per_sample.drop_duplicates("sample")
        return {
            "accuracy": self.accuracy,
            "answer_accuracy": float(answered["answer_correct"].mean()) if "answer_correct" in answered else None,
            "balanced_accuracy": float(final["balanced_score"].iloc[-1]),
            "rank_score": float(final["rank_score"].iloc[-1]),
            "balanced_critical_layer": critical_layer(
                final["balanced_score"].to_numpy(), len(self.labels.labels), self.alpha, self.weight
            ),
            "one_label_wins_layers": [int(la) for la in final.loc[final["one_label_wins"], "layer"]],
            "critical_layer": self.critical_layers.get("final"),
            "critical_layers": self.critical_layers,
            "labels": list(self.labels.labels),
            "label_tokens": list(self.labels.verbalizations),
            "chance_threshold": chance_threshold(len(self.labels.labels), self.alpha),
            "alpha": self.alpha,
            "weight": self.weight,
            "n_samples": int(self.per_sample["sample"].nunique()),
            "n_layers": self.n_layers,
            **self.meta,
        }


def sample_lens(
    lalm: HookedLALM, batch: Batch, labels: LabelSet, last_text: int, audio_bins: int,
    translators: Translators | None = None,
) -> list[dict]:  # fmt: skip
    """What the lens sees for one prepared sample at each (layer, position group): correctness of the argmax over
    the label set, p(true) and every label's probability over the set, the margin (true logit minus the best other)
    and the true label's rank; means over a group's positions, the argmax only at single positions."""
    logits = lens_logits(lalm, batch, labels.token_ids, translators)[:, 0].double()  # (layers, positions, |Y|)
    check_finite_logits(logits, batch.meta[0].get("id", "?"), lalm.dtype)
    truth = labels.index(batch.meta[0]["label"])
    argmax = logits.argmax(-1)
    correct = (argmax == truth).double()
    probs = logits.softmax(-1)
    others = logits.clone()
    others[..., truth] = float("-inf")
    margin = logits[..., truth] - others.max(-1).values
    rank = 1.0 + (logits > logits[..., truth : truth + 1]).sum(-1).double()
    rows = []
    for name, pos in batch.regions[0].addresses(last_text, audio_bins):
        pos = list(pos)
        acc, p, mar, rk = (t[:, pos].mean(1) for t in (correct, probs[..., truth], margin, rank))
        pl = probs[:, pos].mean(1)
        for la in range(lalm.n_layers):
            pred = labels.labels[int(argmax[la, pos[0]])] if len(pos) == 1 else ""  # one prediction per position
            rows.append(
                {"sample": batch.meta[0]["id"], "layer": la, "position": name, "correct": float(acc[la]),
                 "label": labels.labels[truth], "pred": pred, "p_true": float(p[la]), "margin": float(mar[la]),
                 "rank": float(rk[la]), "n_labels": len(labels.labels),
                 **{f"p_{y}": float(pl[la, j]) for j, y in enumerate(labels.labels)}}
            )  # fmt: skip
    return rows


def lens(
    lalm: HookedLALM,
    samples: Sequence[Sample],
    fmt: str = "direct",
    last_text: int = 5,
    audio_bins: int = 10,
    alpha: float = 0.2,
    weight: str = "excess",
    labels: Sequence[str] | None = None,
    progress: bool = True,
    answers: bool = True,
    label_space: str = "auto",
    translators: Translators | None = None,
) -> LensResult:
    """Run the logit lens over clips in memory (a notebook's call; `patchlab lens` and `patchlab run` run the `lens`
    analysis): information score I(l, i) = accuracy of argmax over the label set.

    With `answers`, each clip's rows also carry the model's own answer to SAKURA's multiple-choice question
    (`answer`, `answer_correct`); with `translators` (`patchlab.load_translators`), the tuned lens.
    """
    if not samples:
        raise PatchlabError("no samples to run the lens on", "check --data/--track/--limit")
    ls = label_set(lalm, list(labels or labels_of(list(samples))), fmt, label_space)
    rows = []
    for s in tqdm(samples, desc="logit lens", disable=not progress, unit="clip"):
        wave = load_clip(lalm, s.path)
        batch = lalm.prepare(wave, lalm.sampling_rate, build_prompt(s, fmt), id=s.id, label=s.label)
        got = sample_lens(lalm, batch, ls, last_text, audio_bins, translators)
        if answers and s.options:
            choice = option_choice(lalm, s, wave=wave)
            for r in got:
                r.update(answer=s.options[choice], answer_correct=choice == s.answer)
        rows += got
    per = pd.DataFrame(rows)
    scores = information_scores(per)
    final = per[(per.position == "final") & (per.layer == lalm.n_layers - 1)]
    n = len(ls.labels)
    clips = clip_critical_layers(per, n, alpha, weight)
    return LensResult(
        scores,
        per,
        ls,
        float(final["correct"].mean()),
        critical_layers(scores, n, alpha, weight),
        lalm.n_layers,
        alpha,
        weight,
        {"format": fmt, "model": lalm.source, "random_weights": lalm.is_random,
         "lens": "logit" if translators is None else "tuned",
         "label_critical_layers": label_critical_layers(per, n, alpha, weight),
         "clips_never_above_chance": int(clips["never_above_chance"].sum()),
         "clip_critical_layer_median": float(clips["critical_layer"].median())},
        clips,
    )  # fmt: skip
