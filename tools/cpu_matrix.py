"""The CI reference tests under each CPU-kernel and thread variant this machine can run, one variant at a time:
torch's ATEN_CPU_CAPABILITY (default, avx2, avx512 where the CPU has them), OMP_NUM_THREADS 1 and 2, and numpy with
its SIMD dispatch reduced to its baseline (NPY_DISABLE_CPU_FEATURES). `make cpu-matrix` runs it; CI runs the
all-reduced variant on one config (tests/test_reproducibility.py).

    python tools/cpu_matrix.py [pytest -k expression]
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import torch
from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__


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


def main(select: str) -> int:
    print(f"torch's CPU capability here: {torch.backends.cpu.get_cpu_capability()}; numpy dispatch: {numpy_dispatch()}")
    failed = 0
    for name, env in variants():
        t0 = time.time()
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_experiments.py",
            "-k",
            select,
        ]
        res = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
        last = (res.stdout.strip().splitlines() or ["(no output)"])[-1]
        print(f"{name:80s} {'ok  ' if res.returncode == 0 else 'FAIL'} {last}  ({time.time() - t0:.0f} s)", flush=True)
        if res.returncode:
            failed += 1
            print("\n".join(line for line in res.stdout.splitlines() if "moved" in line or "Error" in line)[-3000:])
    return failed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "ci_size"))
