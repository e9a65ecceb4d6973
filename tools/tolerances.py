"""Derive the CI references' tolerance from a measured sensitivity: the largest relative difference of any pinned
number between the references and the same configs recomputed under other CPU kernels (tools/references.py --into
DIR, run under each variant of tools/cpu_matrix.py). All configs run the same small models, whose decoder amplifies a
last-bit difference the same way whichever config measured it, so each reference gets 10x the largest spread over
all of them (at least 1e-9), stored with its own spreads; the reference test uses it.

    python tools/tolerances.py NAME=DIR [NAME=DIR ...]     # e.g. aten-default=/tmp/var_default
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from cpu_matrix import numbers

ROOT = Path(__file__).resolve().parents[1]
FLOOR, FACTOR = 1e-9, 10.0


def spread(reference: dict, other: dict) -> tuple[float, str]:
    """The largest relative difference of a reference's numbers in `other`, and where it is."""
    new = dict(numbers(other))
    worst, where = 0.0, ""
    for k, a in numbers(reference):
        b = new.get(k, math.nan)
        if a == b or (a != a and b != b):
            continue
        d = abs(a - b) / max(1.0, abs(a)) if b == b else math.inf
        if d > worst:
            worst, where = d, k
    return worst, where


def main(pairs: list[str]) -> None:
    variants = dict(p.split("=", 1) for p in pairs)
    files = sorted((ROOT / "experiments" / "reference").glob("*.json"))
    spreads: dict[str, dict] = {}
    for ref_file in files:
        ref = json.loads(ref_file.read_text())
        spreads[ref_file.stem] = {}
        for name, folder in variants.items():
            other = Path(folder) / ref_file.name
            if other.is_file():
                worst, where = spread(ref, json.loads(other.read_text()))
                spreads[ref_file.stem][name] = {"max_relative_difference": worst, "at": where.rstrip(".")}
    largest = max([v["max_relative_difference"] for s in spreads.values() for v in s.values()] or [0.0])
    for ref_file in files:
        ref = json.loads(ref_file.read_text())
        ref["tolerance"] = {
            "relative": max(FLOOR, FACTOR * largest),
            "rule": f"{FACTOR:g} x the largest relative spread of any reference across CPU-kernel variants "
            f"({largest:.1e}), at least {FLOOR:g}",
            "spread": spreads[ref_file.stem],
        }
        ref_file.write_text(json.dumps(ref, indent=2) + "\n")
        own = max([v["max_relative_difference"] for v in spreads[ref_file.stem].values()] or [0.0])
        print(f"{ref_file.stem:22s} spread {own:.1e}  tolerance {ref['tolerance']['relative']:.1e}")


if __name__ == "__main__":
    main(sys.argv[1:])
