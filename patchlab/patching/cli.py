"""`patchlab patch`: build (clean, corrupted) pairs for a track and write the patching table, summary and plot."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..corrupt import make_pair
from ..data import label_set, load_track, track_labels
from ..grounding import regions_for
from ..io import write_json, write_table
from ..models import load
from ..outdir import claim
from ..preflight import check_audio, check_device
from ..report.plots import patch_heatmap, region_curves
from .engine import patch
from .spec import region_specs, sweep


def run_patch_command(args: argparse.Namespace) -> None:
    samples = load_track(args.data, args.track, args.limit, args.seed)
    pool = load_track(args.data, args.track)
    check_device(args.device)
    check_audio(samples)
    out = claim(args.out, "patch")
    lalm = load(
        args.model, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code, variant=args.variant
    )
    labels = label_set(lalm, track_labels(args.data, args.track), args.prompt, args.label_space)
    pairs = [make_pair(lalm, s, args.corruption, args.prompt, labels.index(s.label), pool, args.seed) for s in samples]
    if args.method == "atp":
        return _atp(lalm, args, pairs, labels)
    if args.positions == "sweep":
        specs_for = lambda p: sweep(lalm.n_layers, p.clean.length, args.site, args.direction)  # noqa: E731
    else:
        names = (*regions_for(pairs), "all")
        specs_for = lambda p: region_specs(lalm.n_layers, names, site=args.site, direction=args.direction)  # noqa: E731
    res = patch(lalm, pairs, label_ids=labels.token_ids, max_batch=args.max_batch, spec_fn=specs_for)
    write_table(out / "patching.csv", res.table)
    t = res.table
    summary = {
        **_about(args, lalm, labels, pairs),
        "positions": args.positions,
        "n_rows": len(t),
        "clean_accuracy": float(t.groupby("sample")["clean_acc"].first().mean()),
        "corrupt_accuracy": float(t.groupby("sample")["corrupt_acc"].first().mean()),
    }
    tag = " (RANDOM WEIGHTS)" if lalm.is_random else ""
    if args.positions == "sweep":
        r = pairs[0].clean.regions[0]
        bounds = {"audio": (r.audio[0], r.audio[-1])} if r.audio else {}
        one = t[t["sample"] == pairs[0].sample]
        patch_heatmap(
            one,
            "logit_diff_restored",
            out / "patching_heatmap.png",
            bounds,
            f"{args.track}: {args.direction} {args.site}, restored logit diff ({pairs[0].sample}){tag}",
        )
    else:
        summary["restoration_by_region"] = (
            t.groupby(["position", "layer"])["logit_diff_restored"].mean().unstack(0).round(6).to_dict()
        )
        region_curves(
            t,
            "logit_diff_restored",
            out / "patching_regions.png",
            f"{args.track}: {args.direction} {args.site} by region{tag}",
        )
    write_json(out / "summary.json", summary)
    print(f"{len(t)} patched rows over {len(pairs)} clips -> {out}")


def _atp(lalm, args: argparse.Namespace, pairs, labels) -> None:
    """Attribution patching over every (layer, position); `--verify-top K` re-runs the K largest with real patching."""
    from .attribution import attribution, verify_top

    out = Path(args.out)  # claimed by the caller
    est = attribution(lalm, pairs, labels.token_ids, [args.site])
    write_table(out / "attribution.csv", est)
    msg = f"AtP estimates for {len(est)} cells over {len(pairs)} clips"
    summary = {**_about(args, lalm, labels, pairs), "method": "atp", "n_cells": len(est)}
    if args.verify_top:
        top = verify_top(lalm, pairs, est, labels.token_ids, k=args.verify_top)
        write_table(out / "verified.csv", top)
        agree = float((top["atp"].gt(0) == top["real"].gt(0)).mean())
        summary.update(verify_top=args.verify_top, sign_agreement=agree)
        msg += f"; top {args.verify_top} per clip verified by real patching (sign agreement {agree:.2f})"
    r = pairs[0].clean.regions[0]
    bounds = {"audio": (r.audio[0], r.audio[-1])} if r.audio else {}
    one = est[est["sample"] == pairs[0].sample]
    tag = " (RANDOM WEIGHTS)" if lalm.is_random else ""
    patch_heatmap(
        one,
        "atp_restored",
        out / "attribution_heatmap.png",
        bounds,
        f"{args.track}: AtP estimate of {args.site} patching ({pairs[0].sample}){tag}",
    )
    write_json(out / "summary.json", summary)
    print(f"{msg} -> {out}")


def _about(args: argparse.Namespace, lalm, labels, pairs) -> dict:
    """What every `patch` summary records: the model, track, prompt, corruption, labels, clips and seeds."""
    return {
        "model": args.model,
        "variant": args.variant,
        "random_weights": lalm.is_random,
        "track": args.track,
        "prompt": args.prompt,
        "corruption": args.corruption,
        "site": args.site,
        "direction": args.direction,
        "labels": list(labels.labels),
        "n_samples": len(pairs),
        "seed": args.seed,
        "corruptions": {p.sample: p.corruption for p in pairs},
    }
