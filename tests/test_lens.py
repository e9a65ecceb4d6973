"""Logit lens, information scores, critical layers, and the `patchlab lens` command."""

from __future__ import annotations

import json
import math

import pytest
import torch

from patchlab import critical_layer, lens, lens_logits
from patchlab.cli import main
from patchlab.data import label_set, load_track, tone
from patchlab.errors import PatchlabError


def test_lens_at_last_layer_equals_model_logits(qwen):
    batch = qwen.prepare(tone(1.0), 16000, "What is the speaker's gender?")
    lens_all = lens_logits(qwen, batch)
    assert lens_all.shape[:3] == (qwen.n_layers, 1, batch.length)
    assert (lens_all[-1] - qwen.forward(batch)).abs().max() <= 1e-5
    ids = [5, 7, 11]
    assert torch.allclose(lens_logits(qwen, batch, ids), lens_all[..., ids], atol=1e-6)


def test_critical_layer_matches_hand_worked_formula():
    scores = [0.5, 0.6, 0.7, 0.9, 0.8]  # two labels: tau = 1.2 / 2 = 0.6
    # excess weights: 0, 0 (at tau), 0.1, 0.3, 0.2 -> (2*0.1 + 3*0.3 + 4*0.2) / 0.6 = 1.9 / 0.6
    assert critical_layer(scores, 2) == pytest.approx(1.9 / 0.6)
    # score weights: 0.7, 0.9, 0.8 on layers 2, 3, 4 -> (1.4 + 2.7 + 3.2) / 2.4
    assert critical_layer(scores, 2, weight="score") == pytest.approx(7.3 / 2.4)
    # alpha moves tau: alpha=0.5 -> tau = 0.75: only layers 3 (0.15) and 4 (0.05)
    assert critical_layer(scores, 2, alpha=0.5) == pytest.approx((3 * 0.15 + 4 * 0.05) / 0.2)
    assert math.isnan(critical_layer([0.1, 0.2], 2))
    with pytest.raises(PatchlabError, match="weight"):
        critical_layer(scores, 2, weight="mean")


def test_information_scores_are_accuracies(qwen, toy_data):
    samples = load_track(toy_data, "Gender")
    res = lens(qwen, samples, "direct", progress=False)
    assert set(res.scores.columns) == {
        "layer", "position", "score", "balanced_score", "rank_score", "p_true", "top_label_share", "one_label_wins"
    }  # fmt: skip
    assert res.scores["score"].between(0, 1).all()
    final = res.scores[(res.scores.position == "final") & (res.scores.layer == qwen.n_layers - 1)]["score"].item()
    assert final == pytest.approx(res.accuracy)
    # the model's own answer at the final position, computed independently
    ls = label_set(qwen, ["female", "male"], "direct")
    hits = 0
    for s in samples:
        from patchlab.data import build_prompt, load_audio

        b = qwen.prepare(load_audio(s.path), 16000, build_prompt(s, "direct"))
        hits += int(qwen.forward(b)[0, -1, list(ls.token_ids)].argmax()) == ls.index(s.label)
    assert res.accuracy == pytest.approx(hits / len(samples))


def test_label_sharing_a_first_token_is_refused(qwen):
    with pytest.raises(PatchlabError, match="share their first sub-token"):
        label_set(qwen, ["female", "femalezzz"], "direct")


def test_lens_cli_on_sakura(tiny_dir, sakura, tmp_path, capsys):
    out = tmp_path / "lens"
    rc = main(
        [
            "lens",
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
    summary = json.loads((out / "summary.json").read_text())  # the summary `patchlab run` writes, keys and all
    s = summary["tracks"]["Gender"]["lens"]["direct"]
    assert summary["rests_on"]["Gender"]["labels"] == ["female", "male"] and s["n_samples"] == 8
    assert {"accuracy_last_layer", "critical_layer", "accuracy_lo"} <= set(s) and summary["random_weights"] is True
    assert s["accuracy_lo"] <= s["accuracy_last_layer"] <= s["accuracy_hi"]
    assert (out / "plots" / "lens_Gender_direct.png").stat().st_size > 1000
    assert "layer,position,score" in (out / "tables" / "information_scores.csv").read_text().splitlines()[0]
    assert "accuracy" in capsys.readouterr().out


def test_a_constant_label_lens_has_chance_balanced_accuracy_and_is_flagged():
    """A lens that always says 'female' scores 0.8 accuracy on a 8:2 label mix; balanced accuracy says 0.5, flagged."""
    import pandas as pd

    from patchlab.lens import information_scores

    labels = ["female"] * 8 + ["male"] * 2
    rows = [
        dict(sample=f"s{i}", layer=0, position="final", correct=float(la == "female"), label=la, pred="female")
        for i, la in enumerate(labels)
    ]
    s = information_scores(pd.DataFrame(rows)).iloc[0]
    assert s["score"] == pytest.approx(0.8) and s["balanced_score"] == pytest.approx(0.5)
    assert s["top_label_share"] == 1.0 and bool(s["one_label_wins"])
    # an informative lens on the same mix: balanced accuracy follows accuracy, no flag
    honest = [dict(r, correct=1.0, pred=r["label"]) for r in rows]
    h = information_scores(pd.DataFrame(honest)).iloc[0]
    assert h["balanced_score"] == 1.0 and not bool(h["one_label_wins"])


def test_lens_rows_carry_label_and_prediction(qwen, toy_data):
    res = lens(qwen, load_track(toy_data, "Gender", 2), progress=False)
    final = res.per_sample[res.per_sample.position == "final"]
    assert set(final["label"]) == {"female", "male"} and set(final["pred"]) <= {"female", "male"}
    assert {"balanced_score", "top_label_share", "one_label_wins"} <= set(res.scores.columns)
    assert 0 <= res.summary()["balanced_accuracy"] <= 1


def test_lens_rows_say_what_the_lens_sees_checked_against_the_label_logits(qwen, toy_data):
    """p(true), every label's probability, the margin and the rank at each (layer, position), from an independent
    softmax over the label-set logits; the model's own multiple-choice answer joined per clip."""
    from patchlab.data import build_prompt, load_audio

    s = load_track(toy_data, "Gender")[0]
    res = lens(qwen, [s], "direct", labels=["female", "male"], progress=False)
    ls = label_set(qwen, ["female", "male"], "direct")
    b = qwen.prepare(load_audio(s.path), 16000, build_prompt(s, "direct"))
    logits = lens_logits(qwen, b, ls.token_ids)[:, 0, -1].double()  # final position, every layer
    truth = ls.index(s.label)
    final = res.per_sample[res.per_sample.position == "final"].sort_values("layer")
    p = logits.softmax(-1)
    assert final["p_true"].to_numpy() == pytest.approx(p[:, truth].numpy(), abs=1e-6)
    assert final["p_female"].to_numpy() + final["p_male"].to_numpy() == pytest.approx(1.0)
    margin = logits[:, truth] - logits[:, 1 - truth]
    assert final["margin"].to_numpy() == pytest.approx(margin.numpy(), abs=1e-5)
    assert ((final["rank"] == 1) == (final["correct"] == 1)).all()
    assert set(final["answer"]) <= {"Female", "Male"} and final["answer_correct"].nunique() == 1


def test_a_fixed_label_order_has_rank_score_one_half_and_clips_never_above_chance_are_counted():
    import pandas as pd

    from patchlab.lens import clip_critical_layers, information_scores, label_critical_layers

    rows = []
    for i, la in enumerate(["a"] * 6 + ["b"] * 3 + ["c"] * 3):  # the lens always ranks a > b > c
        for layer in range(4):
            rank = {"a": 1, "b": 2, "c": 3}[la]
            rows.append(dict(sample=f"s{i}", layer=layer, position="final", correct=float(la == "a"), label=la,
                             pred="a", p_true=0.2, margin=-1.0, rank=float(rank), n_labels=3))  # fmt: skip
    per = pd.DataFrame(rows)
    s = information_scores(per).iloc[0]
    assert s["score"] == pytest.approx(0.5) and s["balanced_score"] == pytest.approx(1 / 3)
    assert s["rank_score"] == pytest.approx(0.5) and bool(s["one_label_wins"])
    clips = clip_critical_layers(per, 3)  # p(true) = 0.2 never exceeds tau = 0.4
    assert clips["never_above_chance"].all() and clips["critical_layer"].isna().all()
    crit = label_critical_layers(per, 3)
    assert crit["a"] == pytest.approx(1.5) and math.isnan(crit["b"])


def test_a_killed_lens_run_resumes_to_the_same_rows_and_a_changed_one_is_refused(tiny_dir, toy_data, tmp_path, capsys):
    """`patchlab lens` resumes as a run does: finished shards are checked and reused, a changed setting refused."""
    import pandas as pd

    from patchlab.io import read_table

    model = str(tiny_dir("qwen2_audio"))
    args = ["lens", "--model", model, "--data", str(toy_data), "--track", "Gender", "--limit", "4"]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    part = tmp_path / "part"
    assert main([*args, "--out", str(part)]) == 0
    (part / "summary.json").unlink()  # killed before the merge
    capsys.readouterr()
    assert main([*args, "--out", str(part)]) == 0
    table = "tables/lens_per_sample.csv"
    pd.testing.assert_frame_equal(read_table(tmp_path / "whole" / table), read_table(part / table))
    assert "1 of 1 shards already done, reused" in capsys.readouterr().out
    assert main([*args, "--seed", "3", "--out", str(part)]) == 2
    assert "changed: seed" in capsys.readouterr().err
