"""The `patchlab` command: models, make-tiny, lens, patch."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .errors import PatchlabError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="checkpoint directory (or hub id where the hub is reachable)")
    p.add_argument("--data", required=True, help="directory in SAKURA's layout (Track/metadata.csv, Track/audio/)")
    p.add_argument("--track", required=True, help="track name, e.g. Gender")
    p.add_argument("--prompt", default="direct", choices=["direct", "qa", "mc"], help="prompt format")
    p.add_argument("--limit", type=int, default=None, help="use the first N clips")
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


def cmd_patch(args: argparse.Namespace) -> None:
    from .patching.cli import run_patch_command

    run_patch_command(args)


def cmd_demo(args: argparse.Namespace) -> None:
    """Lens and region patching end to end on the embedded default model and SAKURA (or synthetic clips)."""
    from .data.synth import tone_gender_track
    from .models import make_tiny

    out = Path(args.out)
    model = Path(args.cache) / "tiny-qwen2_audio"
    if not (model / "config.json").exists():
        make_tiny("qwen2_audio", model)
    data = Path(args.data)
    if not (data / "Gender" / "metadata.csv").exists():
        print(f"no SAKURA at {data}: synthesizing a small Gender track of tones")
        data = tone_gender_track(out / "synthetic-data")
    print("model: tiny RANDOM-WEIGHT Qwen2-Audio (plumbing only; patchlab-mini, the trained default, is issue #4)")
    common = ["--model", str(model), "--data", str(data), "--track", "Gender", "--limit", str(args.limit)]
    for sub, extra in (("lens", []), ("patch", ["--corruption", "swap"])):
        a = parser().parse_args([sub, *common, "--out", str(out / sub), *extra])
        a.fn(a)
    print(f"results: {out / 'lens'} and {out / 'patch'}")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="patchlab", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("models", help="list the model families").set_defaults(fn=cmd_models)

    p = sub.add_parser("demo", help="the main job on the embedded default model")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "sakura"))
    p.add_argument("--out", default="out/demo")
    p.add_argument("--cache", default=".cache")
    p.add_argument("--limit", type=int, default=8)
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("make-tiny", help="write a tiny random-weight checkpoint of a family")
    p.add_argument("family")
    p.add_argument("dir")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_make_tiny)

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
