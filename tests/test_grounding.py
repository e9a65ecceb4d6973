"""Grounding: constructed cases with known answers, and its statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from patchlab.corrupt import Pair, text_swap
from patchlab.data import label_set, tone
from patchlab.errors import PatchlabError
from patchlab.grounding import bootstrap_ci, ground, grounding, ratio, share
from patchlab.models.base import Prompt


def test_share_and_ratio_formulas():
    a, t = np.array([0.8, 0.0, -0.2, 0.0]), np.array([0.2, 0.0, 0.2, 0.01])
    assert np.allclose(share(a, t)[[0, 2, 3]], [0.8, -0.5, 0.0]) and np.isnan(share(a, t)[1])
    gc, flagged = ratio(a, t, tol=0.05)
    assert flagged.tolist() == [False, True, False, True]
    assert gc[0] == pytest.approx(4.0) and gc[2] == pytest.approx(-1.0) and np.isnan(gc[[1, 3]]).all()


def test_bootstrap_ci_brackets_the_mean_and_narrows_with_more_samples():
    rng = np.random.default_rng(0)
    small, big = rng.normal(0.5, 0.2, 10), rng.normal(0.5, 0.2, 1000)
    lo_s, hi_s = bootstrap_ci(small, 2000, 0.95, np.random.default_rng(1))
    lo_b, hi_b = bootstrap_ci(big, 2000, 0.95, np.random.default_rng(1))
    assert lo_s < small.mean() < hi_s and lo_b < big.mean() < hi_b
    assert (hi_b - lo_b) < (hi_s - lo_s) / 3


def test_text_only_corruption_gives_zero_audio_delta_at_layer_zero(qwen):
    labels = label_set(qwen, ["female", "male"], "direct")
    prompt = Prompt("The voice sounds female to me.", "The speaker's gender is")
    wave = tone(1.0)
    pairs = []
    for i, (old, new) in enumerate((("female", "male"), ("male", "female"))):
        p = prompt if old == "female" else text_swap(qwen, prompt, "female", "male")
        clean = qwen.prepare(wave, 16000, p, id=f"s{i}", label=old)
        corrupt = qwen.prepare(wave, 16000, text_swap(qwen, p, old, new), id=f"s{i}", label=old)
        pairs.append(Pair(clean, corrupt, labels.index(old), f"s{i}", {"kind": "text"}))
    res = ground(qwen, pairs, labels.token_ids, n_boot=200, progress=False)
    layer0 = res.per_sample[res.per_sample.layer == 0]
    assert np.allclose(layer0["delta_audio"], 0.0, atol=1e-6)
    assert (layer0["delta_text"].abs() > 0).all()
    assert set(res.per_layer.columns) >= {"layer", "delta_audio_lo", "delta_audio_hi", "share", "gc_flagged"}


def test_identical_clean_and_corrupted_runs_are_a_clear_error(qwen):
    labels = label_set(qwen, ["female", "male"], "direct")
    b = qwen.prepare(tone(1.0), 16000, Prompt("", "The speaker's gender is"), id="same", label="female")
    with pytest.raises(PatchlabError, match="same logit_diff for same: the corruption changed nothing"):
        ground(qwen, [Pair(b, b, labels.index("female"), "same", {"kind": "none"})], labels.token_ids, progress=False)


def test_grounding_needs_region_rows():
    t = pd.DataFrame({"direction": ["denoise"], "position": ["audio"], "logit_diff_restored": [1.0]})
    with pytest.raises(PatchlabError, match="region_specs"):
        grounding(t)


def test_handover_layer_is_where_text_overtakes_audio_for_good():
    import numpy as np
    import pandas as pd

    from patchlab.grounding import handover, handover_layer

    audio = np.array([1.0, 0.9, 0.2, 0.6, 0.1, 0.0])
    text = np.array([0.0, 0.1, 0.5, 0.4, 0.8, 0.9])  # text ahead at 2, behind at 3, ahead for good from 4
    assert handover_layer(audio, text) == 4
    assert np.isnan(handover_layer(text, audio))  # audio ahead at the last layer: no handover
    rows = [
        dict(sample=f"s{i}", layer=la, delta_audio=audio[la] + 0.01 * i, delta_text=text[la])
        for i in range(10)
        for la in range(6)
    ]
    h = handover(pd.DataFrame(rows), n_boot=200)
    assert h["handover_layer"] == 4 and h["handover_lo"] == h["handover_hi"] == 4 and h["handover_found_share"] == 1
    assert handover_layer(audio, text, np.array([0, 5, 10, 15, 20, 25])) == 20  # patched at a subset of layers
