"""Patching engine: batched = one forward per spec, agreement with TransformerLens and nnsight, invariants."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from patchlab.cli import main
from patchlab.corrupt import Pair, make_pair
from patchlab.data import label_set, load_track, tone
from patchlab.errors import PatchlabError
from patchlab.hooks import hooked
from patchlab.metrics import final_metrics
from patchlab.patching import PatchSpec, patch, region_specs, sweep
from patchlab.patching.reference import per_cell_sweep
from patchlab.record import record
from patchlab.vocabulary import METRICS


@pytest.fixture(scope="module")
def setup(qwen, toy_data):
    samples = load_track(toy_data, "Gender")
    labels = label_set(qwen, [s.label for s in samples], "direct")
    pairs = {
        kind: [make_pair(qwen, s, kind, "direct", labels.index(s.label), samples, seed=1) for s in samples[:2]]
        for kind in ("swap", "noise", "silence")
    }
    return labels, pairs


def _sorted(t):
    return t.sort_values(["sample", "direction", "site", "layer", "position"], key=lambda c: c.astype(str)).reset_index(
        drop=True
    )


@pytest.mark.parametrize("site", ["resid_pre", "resid_mid", "attn_out", "mlp_out", "resid_post"])
def test_batched_sweep_equals_one_forward_per_spec(qwen, setup, site):
    labels, pairs = setup
    p = pairs["swap"][0]
    specs = sweep(qwen.n_layers, p.clean.length, site) + region_specs(qwen.n_layers, site=site, direction="noise")
    fast = patch(qwen, [p], specs, labels.token_ids, max_batch=48, progress=False)
    slow = patch(qwen, [p], specs, labels.token_ids, max_batch=1, skip_layers=False, progress=False)
    f, s = _sorted(fast.table), _sorted(slow.table)
    diff = (f[list(METRICS)] - s[list(METRICS)]).abs().max().max()
    assert len(fast.table) == len(specs) and diff <= 1e-5
    # restoration divides by clean - corrupt, which a random tiny model makes as small as 0.003: compare it scaled
    for m in METRICS:
        scale = (f[f"clean_{m}"] - f[f"corrupt_{m}"]).abs()
        assert ((f[f"{m}_restored"] - s[f"{m}_restored"]).abs() * scale).fillna(0).max() <= 1e-5


@pytest.mark.parametrize("peer", ["transformer_lens", "nnsight"])
def test_full_resid_pre_sweep_matches_peer(qwen, setup, peer):
    pytest.importorskip(peer)
    labels, pairs = setup
    p = pairs["swap"][1]
    ours = patch(qwen, [p], sweep(qwen.n_layers, p.clean.length), labels.token_ids, progress=False).table
    ref = per_cell_sweep(qwen, p, "resid_pre", backend=peer).reshape(qwen.n_layers, p.clean.length, -1)
    clean_logits = record(qwen, p.clean, ["resid_pre"], [0]).final_logits[0]
    for la in range(qwen.n_layers):
        theirs = final_metrics(ref[la], labels.token_ids, p.label, clean_logits)
        mine = ours[ours.layer == la].sort_values("position")
        for m in ("logit_diff", "logprob", "kl"):
            assert np.abs(mine[m].to_numpy() - theirs[m].numpy()).max() <= 1e-4, (peer, la, m)


@pytest.mark.parametrize("kind", ["swap", "noise", "silence"])
def test_patching_all_positions_restores_clean_at_every_layer(qwen, setup, kind):
    labels, pairs = setup
    for site in ("resid_pre", "resid_mid", "resid_post"):
        t = patch(
            qwen, pairs[kind], region_specs(qwen.n_layers, ("all",), site), labels.token_ids, progress=False
        ).table
        assert np.allclose(t["logit_diff"], t["clean_logit_diff"], atol=1e-5)
        assert np.allclose(t["kl"], 0, atol=1e-5)
        noised = patch(
            qwen, pairs[kind], region_specs(qwen.n_layers, ("all",), site, "noise"), labels.token_ids, progress=False
        ).table
        assert np.allclose(noised["logit_diff"], noised["corrupt_logit_diff"], atol=1e-5)


@pytest.mark.parametrize("kind", ["swap", "noise", "silence"])
def test_audio_only_corruption_at_layer_zero(qwen, setup, kind):
    labels, pairs = setup
    t = patch(qwen, pairs[kind], region_specs(qwen.n_layers, ("audio", "text")), labels.token_ids, progress=False).table
    t0 = t[t.layer == 0].set_index(["sample", "position"])
    text, audio = t0.xs("text", level="position"), t0.xs("audio", level="position")
    assert np.allclose(text["logit_diff"], text["corrupt_logit_diff"], atol=1e-5)  # changes nothing
    assert np.allclose(audio["logit_diff"], audio["clean_logit_diff"], atol=1e-5)  # restores fully
    assert np.allclose(audio["logit_diff_restored"], 1.0, atol=1e-4)


def test_patching_a_position_never_changes_earlier_logits(qwen, setup):
    labels, pairs = setup
    p = pairs["swap"][0]
    clean = record(qwen, p.clean, ["resid_pre"])
    pos = p.clean.regions[0].audio[len(p.clean.regions[0].audio) // 2]

    def edit(x):
        x = x.clone()
        x[:, pos] = clean["resid_pre", 1][:, pos]
        return x

    base = qwen.forward(p.corrupt)
    with hooked(qwen, edits={("resid_pre", 1): edit}):
        patched = qwen.forward(p.corrupt)
    assert torch.equal(patched[:, :pos], base[:, :pos])
    assert not torch.allclose(patched[:, pos:], base[:, pos:])


def test_head_patching_all_heads_equals_attention_output_patch(qwen, setup):
    """o_proj is linear: every head's clean output patched in at once equals patching the clean attn_out."""
    labels, pairs = setup
    p = pairs["swap"][0]
    clean = record(qwen, p.clean, ["head_out", "attn_out"], [2])
    with hooked(qwen, edits={("head_out", 2): lambda x: clean["head_out", 2].clone()}):
        by_heads = qwen.forward(p.corrupt)
    with hooked(qwen, edits={("attn_out", 2): lambda x: clean["attn_out", 2].clone()}):
        by_attn = qwen.forward(p.corrupt)
    assert (by_heads - by_attn).abs().max() <= 1e-5
    heads = [PatchSpec(2, "head_out", "all", head=h) for h in range(qwen.n_heads)]
    single = patch(qwen, [p], heads, labels.token_ids, progress=False).table
    assert single["head"].tolist() == list(range(qwen.n_heads))
    assert single["logit_diff"].nunique() == qwen.n_heads  # each head patched alone gives its own effect
    with pytest.raises(PatchlabError, match="head"):
        PatchSpec(2, "head_out", "all")


def test_misaligned_regions_are_refused(qwen, setup):
    _, pairs = setup
    p = pairs["swap"][0]
    longer = qwen.prepare(tone(2.5), 16000, "What is the speaker's gender?")
    with pytest.raises(PatchlabError, match="do not line up"):
        p.clean.regions[0].check_aligned(longer.regions[0])
    with pytest.raises(PatchlabError, match="unknown region"):
        PatchSpec(0, positions="nowhere")
    assert isinstance(p, Pair)


def test_patch_cli_on_sakura(tiny_dir, sakura, tmp_path):
    out = tmp_path / "patch"
    rc = main(
        [
            "patch",
            "--model",
            str(tiny_dir("qwen2_audio")),
            "--data",
            str(sakura),
            "--track",
            "Gender",
            "--limit",
            "8",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_samples"] == 8 and summary["corruption"] == "swap"
    labels = {s.id: s.label for s in load_track(sakura, "Gender")}
    assert all(c["donor_label"] != labels[sid] for sid, c in summary["corruptions"].items())
    assert (out / "patching_regions.png").exists() and (out / "patching.csv").exists()


def test_text_corruption_swaps_a_hint_and_leaves_audio_states_alone(qwen, toy_data):
    samples = load_track(toy_data, "Gender")
    labels = label_set(qwen, [s.label for s in samples], "direct")
    pairs = [make_pair(qwen, s, "text", "direct", labels.index(s.label), samples) for s in samples[:2]]
    assert [p.corruption["cue"] for p in pairs] == [["female", "male"], ["male", "female"]]
    t = patch(qwen, pairs, region_specs(qwen.n_layers, ("audio", "text")), labels.token_ids, progress=False).table
    t0 = t[t.layer == 0].set_index("position")
    assert np.allclose(t0.loc["audio", "logit_diff"], t0.loc["audio", "corrupt_logit_diff"], atol=1e-5)
    assert np.allclose(t0.loc["text", "logit_diff"], t0.loc["text", "clean_logit_diff"], atol=1e-5)


def test_out_of_memory_backs_off_to_smaller_batches(qwen, setup, monkeypatch):
    """A chunk that runs out of memory is retried at half the size; results equal the un-pressed run."""
    import patchlab.patching.engine as engine

    labels, pairs = setup
    p = pairs["swap"][0]
    specs = sweep(qwen.n_layers, p.clean.length)
    ref = patch(qwen, [p], specs, labels.token_ids, max_batch=64, progress=False)
    real = engine._run_chunk

    def tight(lalm, pair, runs, chunk, skip, key=None):
        if len(chunk) > 10:
            raise torch.OutOfMemoryError("simulated: CUDA out of memory")
        return real(lalm, pair, runs, chunk, skip, key)

    monkeypatch.setattr(engine, "_run_chunk", tight)
    res = patch(qwen, [p], specs, labels.token_ids, max_batch=64, progress=False)
    assert res.meta["max_batch"] == 8
    assert np.allclose(_sorted(res.table)["logit_diff"], _sorted(ref.table)["logit_diff"], atol=1e-6)
