"""Attribution patching: exact where the model is linear in the patch, close in rank elsewhere, verified on top K."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from patchlab.corrupt import make_pair
from patchlab.data import label_set, load_track
from patchlab.errors import PatchlabError
from patchlab.patching import patch, sweep
from patchlab.patching.attribution import attribution, verify_top


@pytest.fixture(scope="module")
def atp_setup(qwen, toy_data):
    samples = load_track(toy_data, "Gender")
    labels = label_set(qwen, [s.label for s in samples], "direct")
    pair = make_pair(qwen, samples[0], "swap", "direct", labels.index(samples[0].label), samples, seed=1)
    return labels, pair


def test_atp_covers_every_cell_and_ranks_like_real_patching(qwen, atp_setup):
    labels, pair = atp_setup
    est = attribution(qwen, [pair], labels.token_ids, ["resid_pre", "attn_out", "mlp_out"])
    assert len(est) == 3 * qwen.n_layers * pair.clean.length
    real = patch(qwen, [pair], sweep(qwen.n_layers, pair.clean.length), labels.token_ids, progress=False).table
    real = real.assign(position=real.position.astype(int)).sort_values(["layer", "position"])
    mine = est[est.site == "resid_pre"].sort_values(["layer", "position"])
    delta = (real.logit_diff - real.corrupt_logit_diff).to_numpy()
    # a random-weight model is far from linear: require agreement well above none; patchlab-mini's own rank
    # correlation (the 0.8 target) is measured by benchmarks/sweep_bench.py --atp (docs/performance.md)
    assert spearmanr(mine.atp.to_numpy(), delta).statistic >= 0.5
    # positions after the final one do not exist; positions whose clean and corrupt states agree estimate 0
    text0 = mine[(mine.layer == 0) & mine.position.isin(pair.clean.regions[0].text)]
    assert np.abs(text0.atp.to_numpy()).max() <= 1e-6


def test_verify_top_reruns_real_patching(qwen, atp_setup):
    labels, pair = atp_setup
    est = attribution(qwen, [pair], labels.token_ids)
    top = verify_top(qwen, [pair], est, labels.token_ids, k=5)
    assert len(top) == 5 and top["atp"].abs().is_monotonic_decreasing
    assert np.isfinite(top["real"]).all()
    assert np.sign(top["atp"]).eq(np.sign(top["real"])).mean() >= 0.6


def test_atp_refuses_unsupported_sites(qwen, atp_setup):
    labels, pair = atp_setup
    with pytest.raises(PatchlabError, match="does not support sites"):
        attribution(qwen, [pair], labels.token_ids, ["head_out"])
