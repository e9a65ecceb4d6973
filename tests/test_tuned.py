"""The tuned lens: untrained translators are the logit lens exactly, trained ones read each layer as a forward's hidden
state edited by hand, the last layer is the model's logits, the KL is the textbook one; training lowers the KL;
runs refuse translators trained on the clips they analyse and a resume under other translators."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import needs_parts

import patchlab
from patchlab.analyses.tuned import critical_shift
from patchlab.cli import main
from patchlab.data import load_track
from patchlab.errors import PatchlabError
from patchlab.experiment import from_dict
from patchlab.lens import lens_logits
from patchlab.runner import run
from patchlab.tuned import (
    COMMITTED,
    Translators,
    digest,
    kl_per_layer,
    load_translators,
    save_translators,
    states,
    train_translators,
)


def _random(lalm, rank: int = 3, seed: int = 0) -> Translators:
    t = Translators(lalm.n_layers, lalm.d_model, rank).to(lalm.dtype)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in t.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return t.requires_grad_(False)


def _batch(lalm, toy_data):
    s = load_track(toy_data, "Gender")[0]
    wave = patchlab.data.load_clip(lalm, s.path)
    return lalm.prepare(wave, lalm.sampling_rate, patchlab.data.build_prompt(s, "direct"), id=s.id, label=s.label)


def test_untrained_translators_are_the_logit_lens_and_trained_ones_read_the_edited_hidden_state(qwen, toy_data):
    batch = _batch(qwen, toy_data)
    logit = lens_logits(qwen, batch)
    identity = Translators(qwen.n_layers, qwen.d_model, 4).to(qwen.dtype)
    assert torch.equal(lens_logits(qwen, batch, translators=identity), logit)
    t = _random(qwen)
    tuned = lens_logits(qwen, batch, translators=t)
    with torch.no_grad():  # independent path: transformers' own hidden states, the translator written out by hand
        hidden = qwen.model(**batch.to(qwen.device, qwen.dtype).tensors, output_hidden_states=True).hidden_states
    for la in range(qwen.n_layers - 1):
        h = hidden[la + 1][0]
        by_hand = qwen.unembed(h + (h @ t.down[la]) @ t.up[la] + t.bias[la])
        assert (tuned[la, 0] - by_hand).abs().max() <= 1e-4 * (1 + by_hand.abs().max())
        assert (tuned[la, 0] - logit[la, 0]).abs().max() > 1e-3  # the translator does change the read-out
    assert torch.equal(tuned[-1], logit[-1])  # the last layer reads the model's own logits under either lens
    assert (tuned[-1, 0] - qwen.forward(batch)[0]).abs().max() <= 1e-4


def test_kl_per_layer_is_the_textbook_kl_and_zero_at_the_last_layer(qwen, toy_data):
    batch = _batch(qwen, toy_data)
    h = states(qwen, batch, [0, 3, batch.tensors["input_ids"].shape[1] - 1])
    t = _random(qwen, seed=1)
    for tr in (None, t):
        kl = kl_per_layer(qwen, h, tr).double().numpy()
        logits = lens_logits(qwen, batch, translators=tr)[:, 0, [0, 3, -1]].double()  # (layers, positions, vocab)
        p = torch.softmax(logits[-1], -1).numpy()
        for la in range(qwen.n_layers):
            q = torch.softmax(logits[la], -1).numpy()
            by_hand = (p * (np.log(p) - np.log(q))).sum(-1)
            assert np.allclose(kl[:, la], by_hand, atol=1e-4)
        assert np.abs(kl[:, -1]).max() <= 1e-5
        assert (kl[:, :-1] > 0).all()


def test_training_lowers_the_held_out_kl_and_saves_what_loads_back(qwen, toy_data, tmp_path):
    clips = load_track(toy_data, "Gender")
    t, log = train_translators(qwen, clips[:4], clips[4:], formats=("direct",), rank=2, epochs=3, per_clip=4, lr=1e-2)
    assert log["loss_per_epoch"][-1] < log["loss_per_epoch"][0]
    assert np.mean(log["held_out_kl_tuned"][:-1]) < np.mean(log["held_out_kl_logit"][:-1])
    assert log["held_out_kl_tuned"][-1] == log["held_out_kl_logit"][-1] == 0
    path = save_translators(t, tmp_path, {**log, "training_clips": [digest(s.path) for s in clips[:4]]})
    back, card = load_translators(path, qwen)
    assert card["rank"] == 2 and all(torch.equal(a, b) for a, b in zip(back.parameters(), t.parameters()))


def _tuned_run(tiny_dir, toy_data, translators, analyses=("lens", "tuned")):
    return from_dict(dict(name="tuned", model=str(tiny_dir("qwen2_audio")), data=str(toy_data), tracks=["Gender"],
                          analyses=list(analyses), limit=4, shard_size=2, dtype="float64",
                          lens={"kind": "tuned", "translators": str(translators)}), "test")  # fmt: skip


def _trained_on(lalm, tmp_path, clips):
    t = _random(lalm)
    return save_translators(t, tmp_path, {"n_layers": lalm.n_layers, "d_model": lalm.d_model, "rank": t.rank,
                                          "training_clips": [digest(s.path) for s in clips]})  # fmt: skip


def test_a_run_through_the_tuned_lens_tests_it_against_the_logit_lens(qwen, tiny_dir, toy_data, tmp_path):
    clips = load_track(toy_data, "Gender")
    exp = _tuned_run(tiny_dir, toy_data, _trained_on(qwen, tmp_path / "t", []))
    summary = run(exp, tmp_path / "run", progress=False)
    t = summary["tracks"]["Gender"]["tuned"]
    assert t["n_clips"] == 4 and set(t) >= {"logit", "tuned", "kl_layers_tested"}
    tested = [v for v in summary["verdicts"] if "than the logit lens" in v["hypothesis"]]
    assert len(tested) == len(t["kl_layers_tested"]) + 2  # KL per layer; critical layers per clip and balanced
    for v in tested:  # KL at every clip; per-clip critical layers where both lenses rise above chance
        finite = v["effect"] == v["effect"]
        assert not finite or v["ci_lo"] <= v["effect"] <= v["ci_hi"]
        assert v["n"] == (4 if "KL" in v["hypothesis"] or "balanced" in v["hypothesis"] else v["n"])
    never = t["logit"]["clips_never_above_chance"], t["tuned"]["clips_never_above_chance"]
    per_clip = next(v for v in tested if "each clip's critical layer" in v["hypothesis"])
    assert per_clip["n"] <= 4 - max(never)
    curves = (tmp_path / "run" / "tables" / "tuned_lens_Gender.csv").read_text()
    assert "kl_lo" in curves and (tmp_path / "run" / "plots" / "tuned_lens_Gender.png").exists()
    assert len(clips) > 4


def test_translators_trained_on_the_clips_analysed_are_refused_before_any_work(qwen, tiny_dir, toy_data, tmp_path):
    clips = load_track(toy_data, "Gender")
    path = _trained_on(qwen, tmp_path / "t", clips[:1])
    exp = _tuned_run(tiny_dir, toy_data, path)
    with pytest.raises(PatchlabError, match="used to train the tuned lens") as e:
        run(exp, tmp_path / "run", progress=False)
    assert "clips the tuned lens was not trained on" in e.value.fix
    assert not (tmp_path / "run").exists()  # refused before the output folder was made


def test_a_model_without_a_tuned_lens_is_refused_naming_the_command_that_trains_one(tiny_dir, toy_data, tmp_path):
    exp = from_dict(dict(name="t", model=str(tiny_dir("qwen2_audio")), data=str(toy_data), tracks=["Gender"],
                         analyses=["lens"], lens={"kind": "tuned"}), "test")  # fmt: skip
    with pytest.raises(PatchlabError, match="needs a tuned lens") as e:
        run(exp, tmp_path / "run", progress=False)
    assert "patchlab tuned-lens" in e.value.fix


def test_resuming_under_other_translators_is_refused(qwen, tiny_dir, toy_data, tmp_path):
    path = _trained_on(qwen, tmp_path / "t", [])
    exp = _tuned_run(tiny_dir, toy_data, path, analyses=("lens",))
    run(exp, tmp_path / "run", progress=False)
    other = _random(qwen, seed=5)
    card = json.loads(path.with_suffix(".json").read_text())
    shutil.rmtree(tmp_path / "t")
    save_translators(other, tmp_path / "t", card)
    with pytest.raises(PatchlabError, match="read through other files"):
        run(exp, tmp_path / "run", resume=True, progress=False)


def test_translators_of_another_shape_are_refused(qwen, tiny_dir, tmp_path):
    t = Translators(qwen.n_layers + 1, qwen.d_model, 2)
    path = save_translators(t, tmp_path, {"n_layers": qwen.n_layers + 1, "d_model": qwen.d_model, "rank": 2})
    with pytest.raises(PatchlabError, match="is for"):
        load_translators(path, qwen)


def test_the_training_command_writes_the_lens_and_refuses_a_bad_share(tiny_dir, toy_data, tmp_path, capsys):
    args = ["tuned-lens", "--model", str(tiny_dir("qwen2_audio")), "--data", str(toy_data), "--out"]
    assert main([*args, str(tmp_path / "a"), "--held-out", "1.5"]) != 0
    assert "--held-out 1.5" in capsys.readouterr().err and not (tmp_path / "a").exists()
    assert main([*args, str(tmp_path / "a"), "--limit", "1", "--held-out", "0.9"]) != 0  # 2 clips: none left to train
    assert "the tuned lens needs both" in capsys.readouterr().err and not (tmp_path / "a").exists()
    assert main([*args, str(tmp_path / "b"), "--epochs", "1", "--positions", "3", "--rank", "2"]) == 0
    out = capsys.readouterr().out
    assert "held-out KL" in out and (tmp_path / "b" / "tuned_lens.safetensors").exists()
    card = json.loads((tmp_path / "b" / "tuned_lens.json").read_text())
    assert len(card["training_clips"]) + len(card["held_out_clips"]) == len(load_track(toy_data, "Gender"))
    assert not set(card["training_clips"]) & set(card["held_out_clips"])


@needs_parts
@pytest.mark.parametrize("model", ["patchlab-mini", "patchlab-mini-qformer"])
def test_the_small_models_committed_tuned_lens_was_not_trained_on_sakura(model, sakura):
    card = json.loads((COMMITTED / f"{model}.json").read_text())
    trained = set(card["training_clips"])
    for track in ("Gender", "Language", "Emotion", "Animal"):
        assert not any(digest(s.path) in trained for s in load_track(sakura, track))
    assert card["weights_sha256"] == digest(COMMITTED / f"{model}.safetensors")
    tuned, logit = card["held_out_kl_tuned"], card["held_out_kl_logit"]
    assert np.mean(tuned[:-1]) < np.mean(logit[:-1])


def test_patchlab_lens_reads_through_a_tuned_lens_and_refuses_a_missing_one(qwen, tiny_dir, toy_data, tmp_path, capsys):
    path = _trained_on(qwen, tmp_path / "t", [])
    args = ["lens", "--model", str(tiny_dir("qwen2_audio")), "--data", str(toy_data), "--track", "Gender",
            "--limit", "2", "--kind", "tuned", "--out"]  # fmt: skip
    assert main([*args, str(tmp_path / "bad"), "--translators", str(tmp_path / "typo.safetensors")]) != 0
    assert "no tuned lens at" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert main([*args, str(tmp_path / "ok"), "--translators", str(path)]) == 0
    logit = tmp_path / "logit"
    assert main([*args[:-3], "--out", str(logit)]) == 0
    tuned = (tmp_path / "ok" / "tables" / "lens_per_sample.csv").read_text()
    assert tuned != (logit / "tables" / "lens_per_sample.csv").read_text()  # the translators changed the read-out


def test_translators_trained_for_other_weights_of_the_model_are_refused(qwen, tiny_dir, toy_data, tmp_path):
    path = _trained_on(qwen, tmp_path / "t", [])
    card = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**card, "model_fingerprint": "other-weights"}))
    with pytest.raises(PatchlabError, match="trained for other weights"):
        run(_tuned_run(tiny_dir, toy_data, path), tmp_path / "run", progress=False)


def test_the_lens_function_reads_through_translators_loaded_by_the_public_name(qwen, toy_data, tmp_path):
    path = _trained_on(qwen, tmp_path, [])
    t, card = patchlab.load_translators(path, qwen)
    clips = load_track(toy_data, "Gender")[:2]
    logit = patchlab.lens(qwen, clips, progress=False, answers=False)
    tuned = patchlab.lens(qwen, clips, progress=False, answers=False, translators=t)
    assert tuned.summary()["lens"] == "tuned" and logit.summary()["lens"] == "logit"
    assert not np.allclose(tuned.per_sample["p_true"], logit.per_sample["p_true"])
    last = tuned.per_sample.layer == qwen.n_layers - 1
    assert np.allclose(tuned.per_sample.loc[last, "p_true"], logit.per_sample.loc[last, "p_true"])


def test_the_balanced_critical_shift_finds_a_known_shift_and_ignores_a_label_bias():
    """Known truth: the tuned lens right from layer 5, the logit lens from layer 8 and, before that, naming label `a`
    for every clip (right on half the clips: a bias a plain accuracy or p(true) would count as information)."""
    rows = []
    for i in range(20):
        label = "ab"[i % 2]
        for la in range(10):
            rows.append(dict(sample=f"c{i}", label=label, lens="tuned", layer=la, correct=la >= 5))
            rows.append(dict(sample=f"c{i}", label=label, lens="logit", layer=la, correct=la >= 8 or label == "a"))
    v, each = critical_shift("T", pd.DataFrame(rows), n_labels=2, alpha=0.2, weight="excess", seed=0)
    assert v.effect == pytest.approx(8.5 - 7.0) and v.ci_lo <= v.effect <= v.ci_hi and v.n == 20
    assert v.p < 0.01 and v.min_effect == 1.0
    assert each["logit"][0] == pytest.approx(8.5) and each["tuned"][0] == pytest.approx(7.0)
    assert all(lo <= est <= hi for est, lo, hi in each.values())
