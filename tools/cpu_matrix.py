"""The CI references recomputed under each CPU-kernel and thread variant this machine can run, one variant at a
time: torch's ATEN_CPU_CAPABILITY (default, avx2, avx512 where the CPU has them), OMP_NUM_THREADS 1 and 2, numpy
with its SIMD dispatch reduced to its baseline (NPY_DISABLE_CPU_FEATURES), then all reduced at once. Each variant's
numbers (every number of every config's tracks, comparison and verdicts) are compared with the committed references:
the largest relative difference, how many differ at all, and whether all are within the test's 1e-9. `make
cpu-matrix` runs it; CI reruns one config with everything reduced (tests/test_reproducibility.py).

    python tools/cpu_matrix.py [--variant NAME ...] [config ...]

`--variant` (repeatable) runs only the variants whose name contains NAME (`--variant avx2 --variant THREADS=1`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

ROOT = Path(__file__).resolve().parents[1]


def numpy_dispatch() -> str:
    """The numpy SIMD targets above its baseline that this CPU has (what NPY_DISABLE_CPU_FEATURES can switch off)."""
    return " ".join(f for f in __cpu_dispatch__ if __cpu_features__.get(f))


def variants() -> list[tuple[str, dict[str, str]]]:
    """(name, environment) of each variant: one knob moved at a time, then all of them reduced together."""
    have = torch.backends.cpu.get_cpu_capability().lower()  # e.g. avx2, avx512, default
    caps = ["default", "avx2"] + (["avx512"] if have.startswith("avx512") else [])
    out = [(f"ATEN_CPU_CAPABILITY={c}", {"ATEN_CPU_CAPABILITY": c}) for c in caps]
    out += [(f"OMP_NUM_THREADS={n}", {"OMP_NUM_THREADS": str(n)}) for n in (1, 2)]
    reduced = numpy_dispatch()
    if reduced:
        out.append((f"NPY_DISABLE_CPU_FEATURES='{reduced}'", {"NPY_DISABLE_CPU_FEATURES": reduced}))
    everything = {"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1"}
    if reduced:
        everything["NPY_DISABLE_CPU_FEATURES"] = reduced
    out.append(("all reduced (" + ", ".join(f"{k}={v}" for k, v in everything.items()) + ")", everything))
    return out


def numbers(node, prefix=""):
    """(path, value) of every number in a summary's tracks, comparison and verdicts."""
    if isinstance(node, dict):
        for k, v in node.items():
            if prefix or k in ("tracks", "comparison", "verdicts"):
                yield from numbers(v, f"{prefix}{k}.")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from numbers(v, f"{prefix}{i}.")
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield prefix, float(node)


def compare(got: Path, names: list[str]) -> tuple[float, int, int, list[str]]:
    """(largest relative difference, numbers that differ, numbers compared, configs beyond their tolerance) against
    the committed references."""
    worst, differ, total, beyond = 0.0, 0, 0, []
    for name in names:
        ref = dict(numbers(json.loads((ROOT / "experiments" / "reference" / f"{name}.json").read_text())))
        new = dict(numbers(json.loads((got / f"{name}.json").read_text())))
        mine = 0.0
        for k, a in ref.items():
            b = new.get(k, math.nan)
            total += 1
            if a != b and not (a != a and b != b):
                differ += 1
                mine = max(mine, abs(a - b) / max(1.0, abs(a)) if b == b else math.inf)
        worst = max(worst, mine)
        if mine > tolerance(name):
            beyond.append(f"{name} ({mine:.1e} > {tolerance(name):.1e})")
    return worst, differ, total, beyond


def tolerance(name: str) -> float:
    """A reference's stored tolerance (tools/tolerances.py), at least 1e-9."""
    ref = json.loads((ROOT / "experiments" / "reference" / f"{name}.json").read_text())
    return max(1e-9, ref.get("tolerance", {}).get("relative", 1e-9))


def main(names: list[str], only: list[str] | None = None) -> int:
    names = names or sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml"))
    chosen = [(n, env) for n, env in variants() if not only or any(o in n for o in only)]
    if not chosen:
        sys.exit(f"no variant matches {only}; the variants here: {', '.join(n for n, _ in variants())}")
    print(f"torch's CPU capability here: {torch.backends.cpu.get_cpu_capability()}; numpy dispatch: {numpy_dispatch()}")
    print(f"configs: {', '.join(names)}")
    failed = 0
    for name, env in chosen:
        t0 = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            res = subprocess.run([sys.executable, str(ROOT / "tools" / "references.py"), "--into", tmp, *names],
                                 env={**os.environ, **env}, capture_output=True, text=True)  # fmt: skip
            if res.returncode:
                failed += 1
                print(f"{name:70s} FAIL (exit {res.returncode}): {res.stderr.strip().splitlines()[-1:]}", flush=True)
                continue
            worst, differ, total, beyond = compare(Path(tmp), names)
        failed += bool(beyond)
        print(
            f"{name:70s} {'FAIL' if beyond else 'ok  '} max rel diff {worst:.2e}, {differ} of {total} numbers differ "
            f"({time.time() - t0:.0f} s){' beyond tolerance: ' + ', '.join(beyond) if beyond else ''}",
            flush=True,
        )
    return failed


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=None, help="only variants whose name contains this")
    parser.add_argument("configs", nargs="*", help="experiment names (default: every config)")
    args = parser.parse_args()
    sys.exit(main(args.configs, args.variant))
