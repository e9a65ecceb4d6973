"""Screened grounding against real patching of every clip: per (track, region) the largest and mean error over
layers of the screened per-layer estimate, from two finished runs of one dataset (one with `ground: {screen: s}`,
one without). The screened estimate is recomputed by `patchlab.screen.estimate` from the screened run's AtP table
and the real run's rows of the clips that `patchlab.screen.to_verify` picks (the seeded share and every clip whose
gap is below --gap), so other shares and gaps can be replayed offline; --seeds N replays N seeds and reports the
mean and worst of each row's largest error (the sampling spread of one screened run).

    python benchmarks/screen_agreement.py SCREENED_RUN REAL_RUN [--share 0.25 --gap 1.0 --seeds 1]
"""

from __future__ import annotations

import argparse

import pandas as pd

from patchlab.screen import estimate, to_verify, topup, topup_shares


def agreement(
    atp: pd.DataFrame, real: pd.DataFrame, share: float, gap: float, seed: int, tol: float | None = None
) -> pd.DataFrame:
    """Per (track, region): verified clips, largest and mean error over layers, interval coverage and width (with
    `tol`, after the second phase that `patchlab.screen.topup` adds)."""
    gaps = atp.groupby("sample")["gap"].first()
    ids = {s for s, g in gaps.items() if to_verify(s, g, share, seed, gap)}
    rows = []
    for track, a in atp.groupby("track", sort=False):
        r = real[real.track == track]
        first = r[r["sample"].isin(ids)]
        if tol is not None:  # the second phase: more clips per region, sized by the first phase's residuals
            shares = topup_shares(a, first, share, gap, tol)
            extra = topup(a.groupby("sample")["gap"].first(), shares, share, seed, gap)
            wanted = pd.Series([(s, reg) for s, regs in extra.items() for reg in regs], dtype=object)
            first = pd.concat([first, r[pd.Series(list(zip(r["sample"], r["position"])), index=r.index).isin(wanted)]])
        est, _ = estimate(a, first, small_gap=gap)
        truth = r.groupby(["layer", "position"], as_index=False)["logit_diff_restored"].mean()
        m = est.merge(truth, on=["layer", "position"])
        m["error"] = (m["estimate"] - m["logit_diff_restored"]).abs()
        m["covered"] = (m["lo"] <= m["logit_diff_restored"]) & (m["logit_diff_restored"] <= m["hi"])
        for region, g in m.groupby("position", sort=False):
            rows.append(dict(track=track, region=region, verified=int(g["n_verified"].max()),
                             half_width=(g["hi"] - g["lo"]).max() / 2,
                             take_all=int(g["n_take_all"].max()), clips=int(g["n_screened"].max()),
                             max_error=g["error"].max(), mean_error=g["error"].mean(),
                             covered=g["covered"].mean()))  # fmt: skip
    return pd.DataFrame(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("screened")
    p.add_argument("real")
    p.add_argument("--share", type=float, default=0.25, help="verified share (default: 0.25)")
    p.add_argument("--gap", type=float, default=1.0, help="take-all stratum: |clean - corrupt| below this (default 1)")
    p.add_argument("--tol", type=float, default=None, help="second phase: verify until half-widths <= this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=1, help="replay this many seeds from --seed (default: 1)")
    args = p.parse_args()
    atp = pd.read_csv(f"{args.screened}/tables/screen_atp.csv")
    real = pd.read_csv(f"{args.real}/tables/patching.csv")
    real = real[(real.direction == "denoise") & (real.site == "resid_pre")]
    if "gap" not in atp:  # runs before the take-all stratum: the gap of the real run, the same forwards
        gap = real.groupby("sample")[["clean_logit_diff", "corrupt_logit_diff"]].first()
        atp["gap"] = atp["sample"].map(gap["clean_logit_diff"] - gap["corrupt_logit_diff"])
    runs = [agreement(atp, real, args.share, args.gap, args.seed + k, args.tol) for k in range(args.seeds)]
    if args.seeds == 1:
        print(runs[0].round(3).to_string(index=False))
        return
    keys = ["track", "region"]
    both = pd.concat(runs).groupby(keys, sort=False)
    table = both[["verified", "take_all", "mean_error", "covered", "half_width"]].mean()
    table["max_error_mean"] = both["max_error"].mean()
    table["max_error_worst"] = both["max_error"].max()
    print(f"{args.seeds} seeds from {args.seed}, share {args.share}, gap {args.gap}, tol {args.tol}")
    print(table.round(3).to_string())


if __name__ == "__main__":
    main()
