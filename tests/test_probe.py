"""Encoder probes: out-of-fold balanced accuracy finds the layer where a label becomes linearly decodable."""

from __future__ import annotations

import numpy as np
import pytest

import patchlab
from patchlab.data import tone
from patchlab.probe import encoder_layers, pooled_states, probe_scores, state_rows


def _states(seed=0, n=40, d=6):
    """Layer 0: noise; layer 1: a weak signal; layer 2 on: the label is a direction (separable). 3:1 label mix."""
    rng = np.random.default_rng(seed)
    labels = ["a" if i % 4 else "b" for i in range(n)]
    rows = []
    for i, la in enumerate(labels):
        sign = 1.0 if la == "a" else -1.0
        layers = [rng.standard_normal(d) for _ in range(4)]
        layers[1][0] += 0.3 * sign
        layers[2][0] += 4.0 * sign
        layers[3][0] += 5.0 * sign
        rows += state_rows(f"c{i}", la, np.stack(layers))
    import pandas as pd

    return pd.DataFrame(rows)


def test_probe_finds_the_saturation_layer_and_a_label_prior_cannot_fake_it():
    table, info = probe_scores(_states(), seed=0, n_boot=100)
    acc = table.set_index("encoder_layer")["balanced_accuracy"]
    assert acc[2] >= 0.95 and acc[3] >= 0.95 and info["saturation_layer"] == 2
    assert acc[0] <= 0.7  # noise: near chance 0.5 although 75% of clips are 'a'
    assert (table["lo"] <= table["balanced_accuracy"]).all() and (table["balanced_accuracy"] <= table["hi"]).all()
    assert len(info["last_layer_correct"]) == 40 and info["chance"] == 0.5


def test_probe_refuses_one_label():
    df = _states()
    with pytest.raises(patchlab.PatchlabError, match="two labels"):
        probe_scores(df[df.label == "a"])


def test_pooled_states_run_the_encoder_and_pool_the_clips_frames(tiny_dir):
    lalm = patchlab.load(tiny_dir("patchlab_mini"))
    batch = lalm.prepare(tone(1.0), 16000, "What?")
    lalm.forward(batch)  # the memo now holds this clip's encoding: the probe must still see the encoder run
    states = pooled_states(lalm, batch, 1.0)
    assert states.shape == (len(encoder_layers(lalm)), lalm.model.config.audio_config.d_model)
    assert np.isfinite(states).all()
    longer = pooled_states(lalm, lalm.prepare(tone(1.0), 16000, "What?"), 2.0)  # pools more (silent) frames
    assert not np.allclose(states, longer)
