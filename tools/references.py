"""Regenerate the CI references: each experiment config at its CI size (`small`, float64) on ../shared/sakura,
its summary written to experiments/reference/<config>.json with the library versions that computed it.

    python tools/references.py                 # every config
    python tools/references.py gender_grounding cross_model
    python tools/references.py --into DIR      # write them to DIR instead (tools/cpu_matrix.py compares them)
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from patchlab.experiment import load_config
from patchlab.io import write_json
from patchlab.provenance import versions
from patchlab.runner import run

ROOT = Path(__file__).resolve().parents[1]
SAKURA = ROOT.parent / "shared" / "sakura"


def regenerate(name: str, into: Path | None = None) -> Path:
    """Run one config at CI size and store its summary (plus versions) as the reference (or in `into`)."""
    exp = load_config(ROOT / "experiments" / f"{name}.yaml")
    exp.data = str(SAKURA)
    with tempfile.TemporaryDirectory() as tmp:
        summary = run(exp, Path(tmp) / "run", small=True, progress=False)
    summary["data"] = "../shared/sakura"  # the folder beside the checkout, not this machine's path
    target = (into or ROOT / "experiments" / "reference") / f"{name}.json"
    old = json.loads(target.read_text()) if target.is_file() else {}
    kept = {"tolerance": old["tolerance"]} if "tolerance" in old else {}  # until tools/tolerances.py measures anew
    write_json(target, {**summary, "versions": versions(), **kept})
    return target


def main(argv: list[str]) -> None:
    into = None
    if "--into" in argv:
        i = argv.index("--into")
        into = Path(argv[i + 1])
        into.mkdir(parents=True, exist_ok=True)
        argv = argv[:i] + argv[i + 2 :]
    for name in argv or sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml")):
        print(f"{name}: {regenerate(name, into)}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
