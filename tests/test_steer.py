"""Steering: the batched, layer-skipping steered run equals a full forward with the direction added by hand, on
every family's tiny model; alpha 0 is the unedited run; a kept share scales the state first (AudioLens' mean); the
label direction is one label's mean minus the others'; each kind of direction runs through an experiment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import FAMILIES

import patchlab
from patchlab.analyses.steer import direction
from patchlab.data import tone
from patchlab.experiment import from_dict
from patchlab.hooks import hooked
from patchlab.runner import run
from patchlab.steering import Addition, steered_logits


def _inputs(lalm):
    prompt = patchlab.Prompt("What is the speaker's gender?", "The speaker is")
    batch = lalm.adapter.feature_batch(lalm, 1.0, prompt) if lalm.family == "granite_speech" else None
    return batch or lalm.prepare(tone(1.0), 16000, prompt, id="clip", label="female")


@pytest.mark.parametrize("family", [*FAMILIES, "patchlab_mini"])
def test_steering_equals_a_forward_with_the_direction_added_by_hand(family, tiny_dir):
    lalm = patchlab.load(tiny_dir(family))
    batch = _inputs(lalm)
    top = lalm.n_layers - 1
    gen = torch.Generator().manual_seed(0)
    vectors = {la: torch.randn(lalm.d_model, generator=gen, dtype=torch.float64) for la in {0, top}}
    settings = [(top, 2.0), (0, 1.0), (0, 0.0), (top, -3.0)]
    fast = steered_logits(lalm, batch, [Addition(la, a, vectors[la]) for la, a in settings])
    for row, (layer, alpha) in enumerate(settings):
        step = alpha * vectors[layer].to(lalm.dtype)

        def add(x, step=step):
            x = x.clone()
            x[:, -1] += step
            return x

        with torch.no_grad(), hooked(lalm, edits={("resid_pre", layer): add}):
            by_hand = lalm.forward(batch)[0, -1].double()
        assert (fast[row] - by_hand).abs().max() <= 1e-4, (layer, alpha)
    clean = lalm.forward(batch)[0, -1].double()
    assert (fast[2] - clean).abs().max() <= 1e-4  # alpha 0: the unedited run
    assert (fast[0] - clean).abs().max() > 1e-3  # the direction does move the answer: not two clean runs compared


def test_a_kept_share_scales_the_state_before_the_addition(qwen):
    batch = _inputs(qwen)
    v = torch.randn(qwen.d_model, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    fast = steered_logits(qwen, batch, [Addition(1, 0.5, v, keep=0.5)])[0]

    def mix(x):
        x = x.clone()
        x[:, -1] = 0.5 * x[:, -1] + 0.5 * v.to(x.dtype)
        return x

    with torch.no_grad(), hooked(qwen, edits={("resid_pre", 1): mix}):
        by_hand = qwen.forward(batch)[0, -1].double()
    assert (fast - by_hand).abs().max() <= 1e-4


def test_the_label_direction_is_one_labels_mean_minus_the_others():
    rows = pd.DataFrame({"sample": list("abcd"), "label": ["f", "f", "m", "m"], "layer": 3,
                         "v0": [1.0, 3.0, 10.0, 20.0], "v1": [0.0, 2.0, 4.0, 6.0]})  # fmt: skip
    d = direction(rows, "label")
    assert np.allclose(d[3, "f"].numpy(), [2.0 - 15.0, 1.0 - 5.0])
    assert np.allclose(d[3, "m"].numpy(), -d[3, "f"].numpy())
    assert np.allclose(direction(rows.drop(columns="label"), "audio_silence")[3].numpy(), [8.5, 3.0])


@pytest.mark.parametrize("kind", ["label", "cue"])
def test_each_kind_of_direction_is_taken_on_some_clips_and_tested_on_the_others(kind, tiny_dir, toy_data, tmp_path):
    exp = from_dict(dict(name="s", model=str(tiny_dir("qwen2_audio")), data=str(toy_data), tracks=["Gender"],
                         analyses=["steer"], limit=6, shard_size=3, dtype="float64",
                         steer={"direction": kind, "layers": [1], "alphas": [1.0, 4.0]}), "test")  # fmt: skip
    summary = run(exp, tmp_path / "run", progress=False)
    steering = summary["tracks"]["Gender"]["steering"]
    held = pd.read_csv(tmp_path / "run" / "tables" / "steering.csv")
    taken = pd.concat(pd.read_csv(p) for p in (tmp_path / "run" / "shards").glob("*/steer_direction.csv"))
    assert steering["direction_clips"] == taken["sample"].nunique() > 0
    assert not set(held["sample"]) & set(taken["sample"])  # tested on clips the direction was not taken from
    tested = [v for v in summary["verdicts"] if "final position, raises" in v["hypothesis"]]
    assert len(tested) == 2 and all(("label's direction" in v["hypothesis"]) == (kind == "label") for v in tested)
