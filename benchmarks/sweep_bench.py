"""Full resid_pre denoising sweep: patchlab vs TransformerLens and nnsight per-cell loops, in one run.

    python benchmarks/sweep_bench.py --mode cpu            # patchlab-mini (real weights), a SAKURA gender clip
    python benchmarks/sweep_bench.py --mode gpu            # Qwen2-Audio-7B decoder shape, bf16, random weights

patchlab runs the whole layer x position sweep. The peers run one forward per cell, as their helpers do;
they are timed on `--peer-cells` cells spread over the grid and their per-cell time is multiplied out to
the full sweep (said so in the table). The floor is the arithmetic the sweep must do (cell (l, p) from
layer l up and from position p on, at the matmul rate measured on this machine), divided by the cells.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import soundfile as sf  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

import patchlab  # noqa: E402
from patchlab.corrupt import Pair, make_pair  # noqa: E402
from patchlab.data import label_set, load_track, tone  # noqa: E402
from patchlab.models.base import HookedLALM  # noqa: E402
from patchlab.patching import patch, sweep  # noqa: E402
from patchlab.patching.attribution import attribution  # noqa: E402
from patchlab.patching.reference import per_cell_sweep  # noqa: E402

SAKURA = Path(__file__).resolve().parents[2] / "shared" / "sakura"

SHAPES = {  # decoder shapes (random weights): SmolLM2-135M and Qwen2-Audio-7B's Qwen-7B decoder
    "cpu": dict(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
    ),
    "gpu": dict(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=156032,
    ),
}


def build(mode: str, device: str, dtype: torch.dtype) -> HookedLALM:
    """patchlab-mini (cpu), or a random-weight Qwen2-Audio with the 7B decoder shape and a tiny encoder (gpu)."""
    if mode == "cpu":
        return patchlab.load("patchlab-mini", device=device, dtype=dtype)
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    tiny = patchlab.make_tiny("qwen2_audio", tempfile.mkdtemp(prefix="bench-"))
    small = patchlab.load(tiny)
    cfg = Qwen2AudioConfig(
        audio_config=small.model.config.audio_config.to_dict(),
        text_config=dict(model_type="qwen2", max_position_embeddings=4096, tie_word_embeddings=False, **SHAPES[mode]),
        audio_token_id=small.audio_token_id,
    )
    cfg.text_config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2AudioForConditionalGeneration(cfg).to(dtype)
    return HookedLALM(model, small.processor, small.adapter, source=str(tiny))


def matmul_rate(device: str, dtype: torch.dtype) -> float:
    """Achieved FLOP/s of a large matmul here: the rate the floor is computed at."""
    n = 2048 if device == "cpu" else 8192
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    reps = 3 if device == "cpu" else 20
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t)


def sweep_flops(lalm: HookedLALM, length: int) -> float:
    """FLOPs a resid_pre sweep must do: cell (l, p) runs layers l.. on positions p.. (earlier ones cannot change)."""
    tc = lalm.model.config.text_config
    d, f, kv = tc.hidden_size, tc.intermediate_size, tc.num_key_value_heads * (tc.hidden_size // tc.num_attention_heads)
    per_layer_token = 2 * (2 * d * d + 2 * d * kv + 3 * d * f) + 4 * length * d  # projections + attention
    n = lalm.n_layers
    layers_run = sum(n - la for la in range(n))  # a cell at layer l runs layers l..n-1
    positions_run = length * (length + 1) // 2  # sum over p of (length - p)
    return layers_run * positions_run * per_layer_token


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process high-water mark (monotone)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["cpu", "gpu"], default="cpu")
    ap.add_argument("--tokens", type=int, default=None, help="approximate prompt length (default 300 gpu, 120 cpu)")
    ap.add_argument("--peer-cells", type=int, default=24, help="cells each peer loop is timed on")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--peers", default="transformer_lens,nnsight,torch")
    ap.add_argument("--atp", action="store_true", help="also time attribution patching and rank-correlate it")
    args = ap.parse_args()
    device = "cuda" if args.mode == "gpu" else "cpu"
    dtype = torch.bfloat16 if args.mode == "gpu" else torch.float32
    lalm = build(args.mode, device, dtype)
    if args.mode == "cpu" and (SAKURA / "Gender" / "metadata.csv").exists():
        clips = load_track(SAKURA, "Gender")
        clean_clip = next(c for c in clips if c.label == "female" and 4.0 < sf.info(str(c.path)).duration < 8.0)
        labels = label_set(lalm, ["female", "male"], "mc")
        pair = make_pair(lalm, clean_clip, "swap", "mc", labels.index("female"), clips, seed=0)
        what = f"patchlab-mini (real weights), SAKURA clip {clean_clip.id} vs a male clip"
    else:
        tokens = args.tokens or (300 if args.mode == "gpu" else 120)
        seconds = max(0.5, (tokens - 30) / 25)  # Qwen2-Audio: 25 audio tokens per second
        prompt = "What is the speaker's gender?"
        clean = lalm.prepare(tone(seconds, 220), 16000, prompt, id="bench", label="female")
        corrupt = lalm.prepare(tone(seconds, 110, seed=1), 16000, prompt, id="bench", label="female")
        labels = label_set(lalm, ["female", "male"], "direct")
        pair = Pair(clean, corrupt, 0, "bench", {"kind": "swap"})
        what = f"random-weight Qwen2-Audio, decoder {SHAPES[args.mode]}"
    length, n_layers = pair.clean.length, lalm.n_layers
    cells = n_layers * length
    print(
        f"model: {what}, {dtype}, {device}; {length} tokens, {n_layers} layers -> {cells} cells",
        flush=True,
    )

    rows = []
    sync(device)
    t = time.perf_counter()
    res = patch(lalm, [pair], sweep(n_layers, length), labels.token_ids, max_batch=args.max_batch, progress=False)
    sync(device)
    ours = time.perf_counter() - t
    assert len(res.table) == cells
    rows.append(("patchlab (batched, layer skip, prefix reuse)", ours / cells, ours, "full sweep", peak_mb(device)))

    step = max(1, cells // args.peer_cells)
    grid = [(i // length, i % length) for i in range(0, cells, step)][: args.peer_cells]
    for peer in [p for p in args.peers.split(",") if p]:
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        sync(device)
        t = time.perf_counter()
        per_cell_sweep(lalm, pair, "resid_pre", peer, cells=grid)
        sync(device)
        per = (time.perf_counter() - t) / len(grid)  # includes one clean recording, shared by the cells
        name = {
            "transformer_lens": "TransformerLens bridge, run_with_hooks per cell",
            "nnsight": "nnsight, one trace per cell",
            "torch": "plain torch hooks, one forward per cell",
        }[peer]
        rows.append((name, per, per * cells, f"{len(grid)} cells, x {cells}", peak_mb(device)))

    if args.atp:
        sync(device)
        t = time.perf_counter()
        est = attribution(lalm, [pair], labels.token_ids, ["resid_pre"])
        sync(device)
        atp = time.perf_counter() - t
        real = res.table.assign(position=res.table.position.astype(int)).sort_values(["layer", "position"])
        est = est.sort_values(["layer", "position"])
        delta = (real.logit_diff - real.corrupt_logit_diff).to_numpy()
        rho = {c: spearmanr(est[c].to_numpy(), delta).statistic for c in ("atp", "atp_linear")}
        rows.append(
            ("attribution patching (AtP*), every cell", atp / cells, atp, "2 forwards + 1 backward", peak_mb(device))
        )
        atp_line = (
            f"AtP* vs real patching over all {cells} cells: Spearman {rho['atp']:.3f} (plain AtP, no query/key fix: "
            f"{rho['atp_linear']:.3f}); AtP* took {atp:.2f} s = {100 * atp / ours:.2f}% of the real sweep's "
            f"{ours:.1f} s"
        )

    rate = matmul_rate(device, dtype)
    floor = sweep_flops(lalm, length) / rate
    rows.append((f"arithmetic floor at {rate / 1e12:.2f} TFLOP/s", floor / cells, floor, "FLOPs / rate", float("nan")))

    print("\n| path | ms per cell | full sweep (s) | timed on | peak MB | patchlab speed-up |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, per, full, how, mem in rows:
        ratio = per / rows[0][1]
        print(f"| {name} | {per * 1e3:.2f} | {full:.1f} | {how} | {mem:.0f} | {ratio:.2f}x |")
    if args.atp:
        print("\n" + atp_line)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
