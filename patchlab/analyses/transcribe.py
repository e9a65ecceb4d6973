"""Transcription (the seed's open question 4: does AudioLens' enrichment transfer to ASR?): each clip answered by
greedy generation under a transcription prompt, its character and word error rates against the clip's label, and
the same with the enrichment (h_deep + c * h_early at every generated position) chosen on one half of the clips by
its first token, tested on the other half."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from .. import stats
from ..data.phonetic import WRITE
from ..enrich import Enrichment, enrichment_rows, grid, search, search_split
from ..errors import PatchlabError
from ..io import write_table
from ..models.base import HookedLALM, Prompt
from ..record import clean_run
from ..steering import steered_logits
from .base import Analysis, Float, Int, Merged, Options, ShardContext

if TYPE_CHECKING:  # a type hint only: the experiment schema is built from this package's registry
    from ..experiment import Experiment


class TranscribeOptions(Options):
    prompt: str = Field(WRITE, min_length=1)  # the transcription instruction; the clip's label is the reference
    max_tokens: Int = Field(8, ge=1, le=64)  # greedy generation stops at end of turn or after this many tokens
    split: Float = Field(0.5, gt=0, lt=1)  # share of clips the enrichment is chosen on (the rest test it)
    coefficients: list[Float | Literal["mean"]] = Field(default_factory=lambda: [0.5, 1.0, "mean"], min_length=1)
    step: Int | None = Field(None, ge=1)  # layer step of the enrichment grid (default: a tenth of the depth)


def edits(a: list, b: list) -> int:
    """Levenshtein distance between two sequences (substitutions, insertions, deletions all cost 1)."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def normalized(text: str) -> str:
    """Case, punctuation and spacing dropped: a transcription is scored on what it spells."""
    return " ".join("".join(c if c.isalnum() else " " for c in text.upper()).split())


def error_rates(hypothesis: str, reference: str) -> tuple[float, float]:
    """(character error rate, word error rate) of one transcription: edits over the reference's length."""
    h, r = normalized(hypothesis), normalized(reference)
    if not r:
        raise PatchlabError(f"reference {reference!r} has nothing to transcribe", "label each clip with its words")
    return edits(list(h.replace(" ", "")), list(r.replace(" ", ""))) / len(r.replace(" ", "")), edits(
        h.split(), r.split()
    ) / len(r.split())


def stop_ids(lalm: HookedLALM) -> set[int]:
    """Tokens that end the answer: end of text and end of turn."""
    tok = lalm.tokenizer
    ids = {tok.eos_token_id} | {tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")}
    return {i for i in ids if isinstance(i, int) and i != tok.unk_token_id}


def greedy(lalm: HookedLALM, wave: np.ndarray, instruction: str, max_tokens: int,
           enrichment: Enrichment | None = None, **meta) -> str:  # fmt: skip
    """The answer by greedy decoding, one token at a time (the answer so far is the assistant turn's prefix), with
    `enrichment` applied at each step's final position; it ends at end of turn or at a line break."""
    stop, text = stop_ids(lalm), ""
    for _ in range(max_tokens):
        batch = lalm.prepare(wave, lalm.sampling_rate, Prompt(instruction=instruction, prefix=text), **meta)
        run = clean_run(lalm, batch)
        if enrichment is None:
            logits = run.cache.final_logits[0]
        else:
            early = run.cache[("resid_pre", enrichment.early)][0, -1]
            logits = steered_logits(lalm, batch, [enrichment.addition(early)])[0]
        if not torch.isfinite(logits).all():
            raise PatchlabError(f"NaN/inf in the logits of {meta.get('id', '?')}", "run in float32 or float64")
        nxt = int(logits.argmax())
        piece = lalm.tokenizer.decode([nxt])
        if nxt in stop or "\n" in piece:
            break
        text += piece
    return text


def _row(s, text: str, condition: str) -> dict:
    cer, wer = error_rates(text, s.label)
    return dict(track=s.track, sample=s.id, label=s.label, condition=condition, text=text, cer=cer, wer=wer)


def _enrichment(payload: str) -> Enrichment:
    early, deep, c = payload.split(":")
    return Enrichment(int(early), int(deep), c if c == "mean" else float(c))


class Transcribe(Analysis):
    name = "transcribe"
    Options = TranscribeOptions
    second_phase = "transcribe"
    clips = ("transcribe",)

    def shard(self, ctx: ShardContext) -> dict[str, pd.DataFrame]:
        """Each clip's plain transcription, and every enrichment of the grid scored on its first token (does the
        enriched run start the reference's first token)."""
        opts, lalm = ctx.exp.transcribe, ctx.lalm
        combos = grid(lalm.n_layers, opts.coefficients, opts.step)
        rows, first = [], []
        for s in ctx.samples:
            wave = ctx.waves[s.id]
            try:
                text = greedy(lalm, wave, opts.prompt, opts.max_tokens, id=s.id, label=s.label)
                batch = lalm.prepare(wave, lalm.sampling_rate, Prompt(instruction=opts.prompt), id=s.id, label=s.label)
                truth = lalm.token_id(s.label.upper())
                got = enrichment_rows(lalm, batch, combos, range(lalm.lm_head.weight.shape[0]), truth)
            except PatchlabError as e:
                ctx.skip(s, e, "transcribe")
                continue
            rows.append(_row(s, text, "plain"))
            first += [{"track": s.track, **r} for r in got]
        return {"transcribe": pd.DataFrame(rows), "transcribe_first": pd.DataFrame(first)}

    def plan_second(self, exp: Experiment, track: str, first: Callable[[str], pd.DataFrame]) -> dict[str, tuple]:
        """The enrichment chosen on the search half by its first token, generated in full on the held-out half."""
        rows = first("transcribe_first")
        if "transcribe" not in exp.analyses or rows.empty:
            return {}
        choice = search(rows, exp.transcribe.split, exp.seed)
        held_out = search_split(rows, exp.transcribe.split, exp.seed)[1]
        return {s: (f"{choice['early']}:{choice['deep']}:{choice['c']}",) for s in held_out}

    def second(self, ctx: ShardContext, payload: dict[str, str]) -> dict[str, pd.DataFrame]:
        """The held-out clips transcribed again with the chosen enrichment."""
        opts, rows = ctx.exp.transcribe, []
        for s in ctx.samples:
            if s.id not in payload:
                continue
            try:
                text = greedy(ctx.lalm, ctx.waves[s.id], opts.prompt, opts.max_tokens, _enrichment(payload[s.id]),
                              id=s.id, label=s.label)  # fmt: skip
            except PatchlabError as e:
                ctx.skip(s, e, "transcribe[enriched]")
                continue
            rows.append(_row(s, text, "enriched"))
        return {"transcribe": pd.DataFrame(rows)}

    def merge(self, m: Merged) -> None:
        rows, first = m.table("transcribe"), m.table("transcribe_first")
        if rows is None:
            return
        exp = m.exp
        write_table(m.out / "tables" / "transcriptions.csv", rows)
        if first is not None:
            write_table(m.out / "tables" / "transcription_enrichment.csv", first)
        for track, g in rows.groupby("track", sort=False):
            plain = g[g.condition == "plain"].set_index("sample")
            entry: dict = {"plain": _rates(plain, exp.seed)}
            enriched = g[g.condition == "enriched"].set_index("sample")
            if first is not None and len(enriched):
                f = first[first.track == track]
                choice = search(f, exp.transcribe.split, exp.seed)
                held = plain.loc[enriched.index]
                entry["setting"] = {k: choice[k] for k in ("early", "deep", "c", "search_samples")}
                entry["held_out_plain"], entry["held_out_enriched"] = _rates(held, exp.seed), _rates(enriched, exp.seed)
                name = f"{choice['early']}→{choice['deep']} (c={choice['c']})"
                for unit in ("cer", "wer"):
                    m.tested.append((track, stats.paired(
                        f"{track}: enrichment {name}, chosen on {choice['search_samples']} clips by its first token, "
                        f"lowers the {unit.upper()} of greedy transcription on the held-out clips (plain − enriched)",
                        held[unit], enriched[unit], seed=exp.seed).matters(stats.MIN_EFFECT["accuracy"])))  # fmt: skip
            m.track_summary(track)["transcription"] = entry


def _rates(t: pd.DataFrame, seed: int) -> dict:
    """Mean CER and WER over clips (each clip's errors over its reference's length), with 95% intervals and n."""
    out: dict = {"n": len(t)}
    for unit in ("cer", "wer"):
        out.update(stats.mean_interval(unit, t[unit], seed))
    return out
