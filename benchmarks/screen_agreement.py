"""Screened grounding against real patching of every clip: per (track, region) the largest and mean error over
layers of the screened per-layer estimate, from two finished runs of one dataset (one with `ground: {screen: s}`,
one without). The screened estimate is recomputed by `patchlab.screen.estimate` from the screened run's AtP table
and the real run's rows of the clips the screened run verified, so other shares can be replayed offline.

    python benchmarks/screen_agreement.py SCREENED_RUN REAL_RUN [--share 0.25 --seed 0]
"""

from __future__ import annotations

import argparse

import pandas as pd

from patchlab.screen import estimate, verified


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("screened")
    p.add_argument("real")
    p.add_argument("--share", type=float, default=None, help="replay another verified share (default: the run's)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    atp = pd.read_csv(f"{args.screened}/tables/screen_atp.csv")
    real = pd.read_csv(f"{args.real}/tables/patching.csv")
    real = real[real.direction == "denoise"]
    if args.share is None:
        verified_ids = set(pd.read_csv(f"{args.screened}/tables/patching.csv")["sample"])
    else:
        verified_ids = {s for s in atp["sample"].unique() if verified(s, args.share, args.seed)}
    rows = []
    for track, a in atp.groupby("track", sort=False):
        r = real[real.track == track]
        est, agreement = estimate(a, r[r["sample"].isin(verified_ids)])
        truth = r.groupby(["layer", "position"], as_index=False)["logit_diff_restored"].mean()
        m = est.merge(truth, on=["layer", "position"])
        m["error"] = (m["estimate"] - m["logit_diff_restored"]).abs()
        m["covered"] = (m["lo"] <= m["logit_diff_restored"]) & (m["logit_diff_restored"] <= m["hi"])
        for region, g in m.groupby("position", sort=False):
            rows.append(dict(track=track, region=region, verified=agreement["n_clips_verified"],
                             clips=agreement["n_clips_screened"], max_error=g["error"].max(),
                             mean_error=g["error"].mean(), covered=f"{int(g['covered'].sum())}/{len(g)}",
                             widest_interval=(g["hi"] - g["lo"]).max()))  # fmt: skip
    print(pd.DataFrame(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
