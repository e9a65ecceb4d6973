"""The main job end to end, by phase: wall time against the arithmetic each phase must do, in one run.

    python benchmarks/end_to_end.py experiments/gender_grounding.yaml [--small] [--data ../shared/sakura]
    python benchmarks/end_to_end.py --demo          # `patchlab demo`'s config (patchlab/demo.yaml)

Each phase's wall time is its self time (a phase inside another, e.g. the audio encoder inside the lens, is
taken out of its parent). Its FLOPs are counted as the phase runs: every decoder layer call (2 x the layer's
weights x tokens, plus attention's 4 x queries x keys x width), every audio-encoder call (2 x its weights x
frames) and every unembedding (2 x width x vocabulary rows). The floor is those FLOPs at the matmul rate measured
here in the run's dtype; the ratio wall / floor is what the phase costs above its arithmetic.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# (module, function): phase. Innermost wins: time inside a nested phase counts there.
PHASES = {
    ("patchlab.runner", "model_for"): "loading the model",
    ("patchlab.runner", "identity"): "run identity (hashing data, weights, code)",
    ("patchlab.data.audio", "load_audio"): "reading audio",
    ("patchlab.models.base", "HookedLALM.prepare"): "processor (features, prompt)",
    ("patchlab.lens", "sample_lens"): "logit lens",
    ("patchlab.answer", "option_choice"): "the model's answer",
    ("patchlab.corrupt", "make_pair"): "pairing / corruption",
    ("patchlab.patching.engine", "record_pair"): "recording clean and corrupted runs",
    ("patchlab.patching.engine", "patch"): "region patching",
    ("patchlab.patching.knockout", "knockout"): "attention knockout",
    ("patchlab.enrich", "enrichment_rows"): "enrichment search",
    ("patchlab.probe", "probe_clips"): "encoder probes",
    ("patchlab.analyses", "_cue_tables"): "listen vs guess",
    ("patchlab.analyses", "merge"): "statistics and verdicts",
    ("patchlab.report.plots", "*"): "plots",
    ("patchlab.report.html", "build_report"): "report",
}


class Meter:
    """A stack of active phases: self time and FLOPs go to the innermost one."""

    def __init__(self) -> None:
        self.stack = ["other"]
        self.wall: dict[str, float] = {}
        self.flops: dict[str, float] = {}
        self.t = time.perf_counter()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.wall[self.stack[-1]] = self.wall.get(self.stack[-1], 0.0) + now - self.t
        self.t = now

    def wrap(self, fn, phase: str):
        def timed(*args, **kwargs):
            self._tick()
            self.stack.append(phase)
            try:
                return fn(*args, **kwargs)
            finally:
                self._tick()
                self.stack.pop()

        timed.__wrapped__ = fn
        return timed

    def add(self, flops: float) -> None:
        self.flops[self.stack[-1]] = self.flops.get(self.stack[-1], 0.0) + flops


def instrument(meter: Meter) -> None:
    """Replace each phase function by its timed version everywhere patchlab refers to it."""
    import importlib

    import patchlab.analyses  # noqa: F401  (every module that imports a phase function by name, first)

    for (mod_name, qual), phase in PHASES.items():
        mod = importlib.import_module(mod_name)
        if qual == "*":
            for name in [n for n in dir(mod) if not n.startswith("_") and callable(getattr(mod, n))]:
                fn = getattr(mod, name)
                if getattr(fn, "__module__", "") == mod_name:
                    setattr(mod, name, meter.wrap(fn, phase))
            continue
        if "." in qual:
            cls, attr = qual.split(".")
            owner = getattr(mod, cls)
            setattr(owner, attr, meter.wrap(getattr(owner, attr), phase))
            continue
        fn = getattr(mod, qual)
        timed = meter.wrap(fn, phase)
        for m in [m for name, m in sys.modules.items() if name.startswith("patchlab") and m is not None]:
            if getattr(m, qual, None) is fn:
                setattr(m, qual, timed)


def count_flops(meter: Meter, lalm) -> None:
    """Forward hooks that add each decoder layer's, the encoder's and the head's arithmetic to the meter (the
    encoder, run only on a memo miss, is also a phase of its own)."""
    per_layer = sum(p.numel() for p in lalm.layers[0].parameters())
    d = lalm.d_model

    def layer(mod, args, kwargs, out):
        h = args[0] if args else kwargs["hidden_states"]
        b, q = h.shape[0], h.shape[1]
        cache = kwargs.get("cache")
        k = q + (cache.k[0].shape[-2] if cache is not None and hasattr(cache, "k") else 0)
        meter.add(2 * per_layer * b * q + 4 * b * q * k * d)

    for block in lalm.layers:
        block.register_forward_hook(layer, with_kwargs=True)
    vocab_d = lalm.lm_head.weight.numel()
    lalm.lm_head.register_forward_hook(lambda m, a, o: meter.add(2 * vocab_d * a[0].shape[:-1].numel()))
    if lalm.encoder_memo is not None:
        enc = lalm.encoder_memo.module
        n_enc = sum(p.numel() for p in enc.parameters())
        compute = lalm.encoder_memo.compute

        def counted(*args, **kwargs):
            out = compute(*args, **kwargs)
            h = out[0] if isinstance(out, tuple) else getattr(out, "last_hidden_state", out)
            meter.add(2 * n_enc * h.shape[0] * h.shape[1])
            return out

        lalm.encoder_memo.compute = meter.wrap(counted, "audio encoder")


def matmul_rate(dtype: torch.dtype, n: int = 1024, reps: int = 20) -> float:
    """FLOP/s of an n x n matmul on this machine in `dtype` (best of `reps`)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", nargs="?", default=None, help="an experiment YAML (default with --demo: the demo's)")
    ap.add_argument("--demo", action="store_true", help="profile `patchlab demo`'s config on SAKURA")
    ap.add_argument("--small", action="store_true", help="the config's CI size")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "sakura"))
    args = ap.parse_args()
    from patchlab import runner
    from patchlab.experiment import load_config

    config = ROOT / "patchlab" / "demo.yaml" if args.demo or not args.config else Path(args.config)
    exp = load_config(config)
    exp.data = args.data
    meter = Meter()
    instrument(meter)
    load = runner.model_for

    def load_counted(e):
        lalm = load(e)
        if not getattr(lalm, "_flops_counted", False):
            count_flops(meter, lalm)
            lalm._flops_counted = True
        return lalm

    runner.model_for = load_counted
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        runner.run(exp, out, small=args.small, progress=False)
    meter._tick()
    total = time.perf_counter() - start
    dtype = getattr(torch, exp.sized(args.small).dtype)
    rate = matmul_rate(dtype)
    print(f"{config.name}{' (small)' if args.small else ''}: {total:.1f} s wall, {torch.get_num_threads()} threads, "
          f"matmul {rate / 1e9:.1f} GFLOP/s in {dtype}")  # fmt: skip
    print("| phase | wall s | share | GFLOP | floor s | wall / floor |")
    print("| --- | --- | --- | --- | --- | --- |")
    floor_total = 0.0
    for phase, wall in sorted(meter.wall.items(), key=lambda kv: -kv[1]):
        gflop = meter.flops.get(phase, 0.0) / 1e9
        floor = gflop * 1e9 / rate
        floor_total += floor
        ratio = f"{wall / floor:.1f}x" if floor > 0.01 else "-"
        print(f"| {phase} | {wall:.1f} | {wall / total:.0%} | {gflop:.1f} | {floor:.1f} | {ratio} |")
    print(f"| **total** | {total:.1f} | 100% | {sum(meter.flops.values()) / 1e9:.1f} | {floor_total:.1f} | "
          f"{total / floor_total:.1f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
