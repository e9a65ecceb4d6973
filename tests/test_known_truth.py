"""Known-truth variants of patchlab-mini (surgery on its real weights): patchlab's patching, knockout, grounding and
lens verdict recover the answer path each variant has by construction (docs/known_truth.md)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import needs_parts

import patchlab
from patchlab.corrupt import make_pair
from patchlab.data import label_set, load_track
from patchlab.errors import PatchlabError
from patchlab.experiment import from_dict
from patchlab.grounding import grounding
from patchlab.io import read_table
from patchlab.patching import patch, region_specs
from patchlab.patching.knockout import knockout_logits, window_specs
from patchlab.runner import run
from patchlab.variants import parse_variant
from patchlab.verdicts import lens_verdict

K = 16  # blocked:16 on patchlab-mini's 30 layers
LAYERS = [0, 8, 15, 16, 22, 29]


def _pairs(lalm, sakura, kind: str, n: int = 2):
    samples = load_track(sakura, "Gender", limit=4)
    labels = label_set(lalm, ["female", "male"], "mc")
    pairs = [make_pair(lalm, s, kind, "mc", labels.labels.index(s.label), pool=samples) for s in samples[:n]]
    return pairs, labels


def _restoration(lalm, pairs, labels) -> pd.DataFrame:
    specs = region_specs(lalm.n_layers, ("audio", "text", "final", "all"), layers=LAYERS)
    return patch(lalm, pairs, specs, label_ids=labels.token_ids, progress=False).table


@needs_parts
def test_blocked_variant_audio_restores_nothing_from_layer_k(sakura):
    """blocked:K: patching the audio region at any layer >= K restores exactly nothing; at layer 0 it restores
    everything (audio is all a swapped clip changes); knocking out audio -> final/text from K up changes nothing,
    from below K it does; grounding's Delta_audio is 0 from K up."""
    lalm = patchlab.load("patchlab-mini", variant=f"blocked:{K}", dtype=torch.float64)
    pairs, labels = _pairs(lalm, sakura, "swap")
    t = _restoration(lalm, pairs, labels)
    audio = t[t.position == "audio"].set_index(["sample", "layer"])["logit_diff_restored"]
    gap = t.groupby("sample")["clean_logit_diff"].first() - t.groupby("sample")["corrupt_logit_diff"].first()
    assert (gap.abs() > 0.05).all()  # the corruption moves the answer: restoration is defined and not 0/0
    assert audio[audio.index.get_level_values("layer") >= K].abs().max() <= 1e-6
    assert (audio.xs(0, level="layer") - 1).abs().max() <= 1e-6
    assert audio[audio.index.get_level_values("layer") < K].abs().max() > 0.05  # below K audio does matter
    per_layer = grounding(t).per_layer.set_index("layer")
    assert per_layer.loc[[la for la in LAYERS if la >= K], "delta_audio"].abs().max() <= 1e-6
    batch = pairs[0].clean
    clean = lalm.forward(batch)[0, -1].float()  # knockout_logits returns float32
    high = knockout_logits(lalm, batch, window_specs(lalm.n_layers, layers=[K, 22]))
    low = knockout_logits(lalm, batch, window_specs(lalm.n_layers, layers=[4]))
    assert (high - clean).abs().max() <= 1e-5  # float32 rounding of logits ~30; from layer 4: ~16
    assert (low - clean).abs().max() > 1e-3


@needs_parts
def test_deaf_variant_cannot_hear_and_grounding_refuses(sakura):
    """deaf, no cue: an audio-swapped run equals the clean run bit for bit, so grounding refuses to report a
    restoration (0/0) instead of printing a number; the same clips on the intact model do differ."""
    intact = patchlab.load("patchlab-mini", dtype=torch.float64)
    pairs, labels = _pairs(intact, sakura, "swap")
    assert max(float((intact.forward(p.clean) - intact.forward(p.corrupt)).abs().max()) for p in pairs) > 1e-2
    deaf = patchlab.load("patchlab-mini", variant="deaf", dtype=torch.float64)
    pairs, labels = _pairs(deaf, sakura, "swap")
    for p in pairs:
        assert torch.equal(deaf.forward(p.clean), deaf.forward(p.corrupt))
    t = patch(deaf, pairs, region_specs(deaf.n_layers, layers=[0, 29]), label_ids=labels.token_ids, progress=False)
    with pytest.raises(PatchlabError, match="changed nothing"):
        grounding(t.table)


@needs_parts
def test_deaf_variant_with_a_text_cue_restores_only_from_the_text(sakura):
    """deaf with a hint naming the label (corruption `text`): the hint moves the answer, audio restores exactly
    nothing at every layer, the text region at layer 0 restores everything (the hint is all that differs)."""
    deaf = patchlab.load("patchlab-mini", variant="deaf", dtype=torch.float64)
    pairs, labels = _pairs(deaf, sakura, "text")
    t = _restoration(deaf, pairs, labels)
    assert ((t["clean_logit_diff"] - t["corrupt_logit_diff"]).abs() > 1e-3).all()
    assert t[t.position == "audio"]["logit_diff_restored"].abs().max() <= 1e-6
    text0 = t[(t.position == "text") & (t.layer == 0)]["logit_diff_restored"]
    assert (text0 - 1).abs().max() <= 1e-6


def test_lens_verdict_is_not_fooled_by_a_constant_guess():
    """A model that cannot hear and always names the majority label is right on 80% of an imbalanced set, above
    1/|Y| = 50%: the lens verdict's baseline is the majority share, so it is not 'supported'."""
    labels = ["female"] * 40 + ["male"] * 10
    per = pd.DataFrame(
        {"sample": range(50), "layer": 29, "position": "final", "label": labels,
         "correct": [1.0 if la == "female" else 0.0 for la in labels]}
    )  # fmt: skip
    v = lens_verdict("Gender", "mc", per, 2)
    assert v.p > 0.4 and abs(v.effect) < 1e-12
    hears = per.assign(correct=1.0)
    assert lens_verdict("Gender", "mc", hears, 2).p < 1e-4


def test_variant_names_are_checked_before_loading(tmp_path):
    assert parse_variant("blocked:12") == ("blocked", 12) and parse_variant("deaf") == ("deaf", None)
    for bad in ("blocked", "blocked:x", "deff", "deaf:3"):
        with pytest.raises(PatchlabError, match="blocked:K"):
            patchlab.load(tmp_path / "nowhere", variant=bad)


def test_blocked_variant_on_a_tiny_model_is_exact_through_every_engine_path(tiny_dir, sakura):
    """blocked:2 on tiny patchlab-mini-qformer (transcript region included): batched layer-skipping patching and a
    full forward per patch agree, and audio from layer 2 up restores exactly nothing."""
    lalm = patchlab.load(tiny_dir("patchlab_mini_qformer"), variant="blocked:2", dtype=torch.float64)
    with pytest.raises(PatchlabError, match="already the variant"):
        from patchlab.variants import make_variant

        make_variant(lalm, "deaf")
    pairs, labels = _pairs(lalm, sakura, "swap")
    specs = region_specs(lalm.n_layers, ("audio", "transcript", "text", "final"))
    fast = patch(lalm, pairs, specs, label_ids=labels.token_ids, progress=False).table
    slow = patch(lalm, pairs, specs, label_ids=labels.token_ids, skip_layers=False, progress=False).table
    both = fast.merge(slow, on=["sample", "layer", "position"], suffixes=("", "_full"))
    assert len(both) == len(fast) and np.allclose(both["logit_diff"], both["logit_diff_full"], atol=1e-9)
    high = fast[(fast.position == "audio") & (fast.layer >= 2)]
    assert np.allclose(high["logit_diff"], high["corrupt_logit_diff"], atol=1e-9)


@needs_parts
def test_the_no_audio_control_sees_nothing_change_on_the_deaf_variant(sakura, tmp_path):
    """deaf: the answer with silence or noise in place of the audio is the answer with the audio, at every layer
    (the control's rows equal bit for bit); the model as trained answers differently once its audio is gone."""
    config = dict(
        name="t", data=str(sakura), tracks=["Gender", "Emotion"], analyses=["control"], limit=2, dtype="float64"
    )
    tables = {}
    for variant in ("deaf", None):
        out = tmp_path / str(variant)
        run(from_dict({**config, "variant": variant}, "t"), out, progress=False)
        t = read_table(out / "tables" / "control.csv").set_index(["sample", "layer", "condition"])["p_answer"]
        tables[variant] = t.unstack("condition")
    deaf, heard = tables["deaf"], tables[None]
    assert (deaf["silence"] == deaf["audio"]).all() and (deaf["noise"] == deaf["audio"]).all()
    assert (heard["silence"] - heard["audio"]).abs().max() > 1e-3
