"""Screening grounding by attribution patching, verified on a seeded share of clips by real patching."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from patchlab.corrupt import make_pair
from patchlab.data import label_set, load_track
from patchlab.experiment import from_dict
from patchlab.patching.attribution import attribution
from patchlab.runner import run
from patchlab.screen import estimate, region_atp, to_verify, topup, topup_shares, verified


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


def _config(tiny_dir, toy_data, share, small_gap=0.0, tol=None) -> dict:
    ground = {"n_boot": 50, "screen": share, "screen_gap": small_gap, **({"screen_tol": tol} if tol else {})}
    return dict(name="screen", model=str(tiny_dir("qwen2_audio")), data=str(toy_data), tracks=["Gender"],
                analyses=["patch", "ground"], limit=6, shard_size=3, dtype="float64", ground=ground)  # fmt: skip


@pytest.fixture(scope="module")
def screened(tiny_dir, toy_data, tmp_path_factory):
    def go(share, small_gap=0.0, tol=None):
        out = tmp_path_factory.mktemp(f"screen{share}_{small_gap}_{tol}")
        return run(from_dict(_config(tiny_dir, toy_data, share, small_gap, tol), "test"), out, progress=False), out

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
    assert (out / "plots" / "screened_grounding_Gender.png").stat().st_size > 0
    assert "Screened grounding: Gender" in (out / "report.html").read_text()


def test_small_gaps_are_all_patched_for_real_and_verdicts_rest_on_the_random_share(screened):
    """A gap threshold above every clip's gap puts all of them in the take-all stratum: all patched for real, the
    estimate is real patching's mean whatever AtP says; the grounding statistics still use the seeded share only."""
    summary, out = screened(0.5, small_gap=1e9)
    atp = pd.read_csv(out / "tables" / "screen_atp.csv")
    real = pd.read_csv(out / "tables" / "patching.csv")
    assert (
        set(real["sample"]) == set(atp["sample"]) and summary["tracks"]["Gender"]["screening"]["n_clips_take_all"] == 6
    )
    est = pd.read_csv(out / "tables" / "screened_grounding_Gender.csv")
    means = real.groupby(["layer", "position"])["logit_diff_restored"].mean().rename("real").reset_index()
    merged = est.merge(means, on=["layer", "position"])
    assert len(merged) == len(est) > 0 and np.allclose(merged["estimate"], merged["real"], atol=1e-12)
    assert (merged["lo"] == merged["hi"]).all()  # no sampling error in a take-all stratum
    share = {s for s in atp["sample"].unique() if verified(s, 0.5, 0)}
    assert summary["tracks"]["Gender"]["grounding"]["n_samples"] <= len(share) < 6


def _strata(n: int, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Synthetic screened clips at one (layer, region): AtP, real restorations and gaps, small gaps heavy-tailed."""
    gap = np.where(np.arange(n) < n // 5, rng.uniform(0.05, 0.9, n), rng.uniform(1.5, 6, n))
    real = rng.normal(0.3, 0.2, n) / np.minimum(gap, 1)
    atp = 0.7 * real + rng.normal(0, 0.1, n) / gap  # AtP errs most where the gap is small, as on SAKURA
    ids = [f"c{i}" for i in range(n)]
    a = pd.DataFrame(dict(sample=ids, layer=3, position="audio", atp_restored=atp, gap=gap))
    r = pd.DataFrame(dict(sample=ids, layer=3, position="audio", logit_diff_restored=real))
    return a, r


def test_stratified_estimate_is_exact_when_the_rest_is_all_verified_and_ignores_atp_in_take_all():
    a, r = _strata(200, np.random.default_rng(0))
    est, _ = estimate(a, r, small_gap=1.0)
    assert est["estimate"].iloc[0] == pytest.approx(r["logit_diff_restored"].mean(), abs=1e-12)
    wild = a.assign(atp_restored=np.where(a["gap"] < 1, 1e6, a["atp_restored"]))  # AtP of take-all clips unused
    keep = r[(a["gap"] < 1) | (np.arange(200) % 3 == 0)]  # take-all, and a third of the rest verified
    one, _ = estimate(a, keep, small_gap=1.0)
    two, _ = estimate(wild, keep, small_gap=1.0)
    assert one["estimate"].iloc[0] == pytest.approx(two["estimate"].iloc[0], abs=1e-12)
    assert one["n_take_all"].iloc[0] == 40 and one["n_verified"].iloc[0] == len(keep)


def test_take_all_stratum_beats_the_plain_share_on_heavy_tailed_restorations():
    """The reason for the stratum: over 100 replays, a share plus the small-gap clips errs far less than the share."""
    rng = np.random.default_rng(1)
    plain, strat = [], []
    for k in range(100):
        a, r = _strata(150, rng)
        truth = r["logit_diff_restored"].mean()
        for small_gap, errs in ((0.0, plain), (1.0, strat)):
            keep = r[[to_verify(s, g, 0.25, k, small_gap) for s, g in zip(a["sample"], a["gap"])]]
            errs.append(abs(estimate(a, keep, small_gap=small_gap)[0]["estimate"].iloc[0] - truth))
    assert np.mean(strat) < 0.5 * np.mean(plain)


def test_a_share_that_verifies_no_clip_finishes_and_says_so(screened):
    """A shard with no clip to patch writes a table without columns; the run still merges (no crash, no interval)."""
    summary, out = screened(0.01)
    atp = pd.read_csv(out / "tables" / "screen_atp.csv")
    assert not any(verified(s, 0.01, 0) for s in atp["sample"].unique())  # the premise: nothing verified
    s = summary["tracks"]["Gender"]["screening"]
    assert s["n_clips_verified"] == 0 and "raise ground.screen" in s["note"]


def test_second_phase_with_a_tight_tol_verifies_every_region_and_equals_real_patching(screened):
    """A tolerance no sample can meet sizes every region's second phase to all clips: the top-up rows are real
    patching's rows of those clips (the same pairs, exactly), and the estimate is real patching's mean, closed."""
    full_summary, full = screened(1.0)
    summary, out = screened(0.3, tol=1e-9)
    s = summary["tracks"]["Gender"]["screening"]
    assert s["tol_met"] and s["n_clips_verified"] == 6 and set(s["max_half_width"].values()) == {0.0}
    first = set(pd.read_csv(out / "tables" / "patching.csv")["sample"])
    second = pd.read_csv(out / "tables" / "screen_topup.csv")
    assert set(second["sample"]) == {f for f in pd.read_csv(out / "tables" / "screen_atp.csv")["sample"]} - first
    every = pd.read_csv(full / "tables" / "patching.csv")
    keys = ["sample", "layer", "position"]
    both = second.merge(every, on=keys, suffixes=("", "_all"))
    assert len(both) == len(second) > 0 and np.array_equal(both["logit_diff"], both["logit_diff_all"])
    one = pd.read_csv(out / "tables" / "screened_grounding_Gender.csv")
    ref = pd.read_csv(full / "tables" / "screened_grounding_Gender.csv")
    assert np.allclose(one["estimate"], ref["estimate"], atol=1e-12) and (one["lo"] == one["hi"]).all()
    assert (
        summary["tracks"]["Gender"]["grounding"]["n_samples"]
        < full_summary["tracks"]["Gender"]["grounding"]["n_samples"]
    )  # the grounding statistics stay on the first phase's random share


def test_second_phase_shards_resume_exactly_and_refuse_a_changed_plan(screened, tiny_dir, toy_data):
    """A run killed before its second phase finished is completed by --resume to the same tables; a top-up shard
    whose recorded regions differ from the plan is refused."""
    import shutil

    from patchlab.errors import PatchlabError

    _, out = screened(0.3, tol=1e-9)
    exp = from_dict(_config(tiny_dir, toy_data, 0.3, tol=1e-9), "test")
    before = pd.read_csv(out / "tables" / "screened_grounding_Gender.csv")
    topups = sorted((out / "shards").glob("Gender-topup-*"))
    assert topups
    shutil.rmtree(topups[-1])
    run(exp, out, resume=True, progress=False)
    pd.testing.assert_frame_equal(pd.read_csv(out / "tables" / "screened_grounding_Gender.csv"), before)
    done = topups[0] / "done"
    meta = json.loads(done.read_text())
    done.write_text(json.dumps({**meta, "regions": ["audio"] * len(meta["samples"])}))
    try:
        with pytest.raises(PatchlabError, match="other samples \\(or regions\\)"):
            run(exp, out, resume=True, progress=False)
    finally:
        done.write_text(json.dumps(meta))


def test_topup_shares_follow_the_residuals_and_stay_nested():
    """The second phase's share grows as the tolerance tightens (1 where no sample meets it, the first share where
    the first phase already does), and the clips it adds are exactly those the larger share's hash picks."""
    a, r = _strata(200, np.random.default_rng(2))
    first = r[[to_verify(s, g, 0.25, 0, 1.0) for s, g in zip(a["sample"], a["gap"])]]
    loose, mid, tight = (topup_shares(a, first, 0.25, 1.0, tol)["audio"] for tol in (10.0, 0.005, 1e-9))
    assert loose == 0.25 and 0.25 < mid < 1.0 and tight == 1.0
    gaps = a.set_index("sample")["gap"]
    extra = topup(gaps, {"audio": mid, "text": 0.25}, 0.25, 0, 1.0)
    expected = {s for s, g in gaps.items() if g >= 1.0 and verified(s, mid, 0) and not verified(s, 0.25, 0)}
    assert set(extra) == expected and all(v == ("audio",) for v in extra.values())
