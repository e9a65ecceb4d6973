"""Screening grounding by attribution patching, verified on a seeded share of clips by real patching."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from patchlab.corrupt import make_pair
from patchlab.data import label_set, load_track
from patchlab.experiment import from_dict
from patchlab.patching.attribution import attribution
from patchlab.runner import run
from patchlab.screen import region_atp, verified


def test_verified_share_is_seeded_and_independent_of_order():
    ids = [f"clip{i}" for i in range(2000)]
    picked = [i for i in ids if verified(i, 0.25, seed=0)]
    assert 0.22 < len(picked) / len(ids) < 0.28
    assert picked == [i for i in reversed(ids) if verified(i, 0.25, seed=0)][::-1]
    assert picked != [i for i in ids if verified(i, 0.25, seed=1)]
    assert all(verified(i, 1.0, seed=3) for i in ids)


def test_region_atp_is_the_sum_of_the_cell_estimates(qwen, toy_data):
    """Independent path: the per-cell AtP of patchlab.patching.attribution, summed over each region's positions."""
    samples = load_track(toy_data, "Gender")
    labels = label_set(qwen, [s.label for s in samples], "direct")
    pair = make_pair(qwen, samples[0], "swap", "direct", labels.index(samples[0].label), samples, seed=1)
    mine = region_atp(qwen, pair, labels.token_ids, ("audio", "text", "final"))
    cells = attribution(qwen, [pair], labels.token_ids, ("resid_pre",), qk_fix=False)
    r = pair.clean.regions[0]
    den = float((cells.atp_linear / cells.atp_restored).dropna().iloc[0])  # clean - corrupt logit difference
    for row in mine.itertuples():
        c = cells[(cells.layer == row.layer) & cells.position.isin(r.positions(row.position))]
        assert row.atp_restored == pytest.approx(float(c.atp_linear.sum()) / den, abs=1e-5)


@pytest.fixture(scope="module")
def screened(tiny_dir, toy_data, tmp_path_factory):
    def go(share):
        cfg = dict(name="screen", model=str(tiny_dir("qwen2_audio")), data=str(toy_data), tracks=["Gender"],
                   analyses=["patch", "ground"], limit=6, shard_size=3, dtype="float64",
                   ground={"n_boot": 50, "screen": share})  # fmt: skip
        out = tmp_path_factory.mktemp(f"screen{share}")
        return run(from_dict(cfg, "test"), out, progress=False), out

    return go


def test_all_verified_the_estimate_is_real_patching(screened):
    """With every clip verified, mean(AtP) + mean(real - AtP) is the mean of real patching, per layer and region."""
    summary, out = screened(1.0)
    est = pd.read_csv(out / "tables" / "screened_grounding_Gender.csv")
    real = pd.read_csv(out / "tables" / "patching.csv")
    real = real[real.position.isin(["audio", "text", "final"])].groupby(["layer", "position"])["logit_diff_restored"]
    merged = est.merge(real.mean().rename("real").reset_index(), on=["layer", "position"])
    assert len(merged) == len(est) > 0 and np.allclose(merged["estimate"], merged["real"], atol=1e-9)
    s = summary["tracks"]["Gender"]["screening"]
    assert s["n_clips_screened"] == s["n_clips_verified"] == 6 and -1 <= s["spearman"] <= 1


def test_a_share_patches_only_the_verified_clips(screened):
    summary, out = screened(0.5)
    patched = set(pd.read_csv(out / "tables" / "patching.csv")["sample"])
    screened_ids = set(pd.read_csv(out / "tables" / "screen_atp.csv")["sample"])
    assert patched == {s for s in screened_ids if verified(s, 0.5, 0)} and patched < screened_ids
    s = summary["tracks"]["Gender"]["screening"]
    assert s["n_clips_verified"] == len(patched) and s["n_clips_screened"] == 6
