"""Steering: the batched, layer-skipping steered run equals a full forward with the direction added by hand, on
every family's tiny model; alpha 0 is the unedited run."""

from __future__ import annotations

import pytest
import torch
from conftest import FAMILIES

import patchlab
from patchlab.analyses.steer import steered_logits
from patchlab.data import tone
from patchlab.hooks import hooked


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
    fast = steered_logits(lalm, batch, settings, vectors)
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
