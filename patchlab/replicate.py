"""`patchlab replicate`: a config's hypotheses on K disjoint seeded parts of the data, and whether each verdict
replicates: the agreement table a reviewer asks for before believing a verdict.

Each part is a complete run (`parts/part-<i>/`, resumable like any run) of the same config on the i-th of K disjoint
stratified parts of every track (`part: [i, K]`; `limit` then applies within the part). Hypotheses are matched
across parts by their text with the numbers it holds masked (a layer picked from a part's data, or a clip count,
may differ). Layers a hypothesis picks from data are already picked on one half of a part's clips and tested on
the other (patchlab.findings); replication tests the whole claim again on clips the part never saw.
"""

from __future__ import annotations

import dataclasses
import html
import re
from pathlib import Path

import pandas as pd

from .errors import PatchlabError
from .experiment import Experiment
from .io import write_atomic, write_json, write_table
from .outdir import claim
from .runner import run

DECISIVE = {"supported", "refuted", "negligible"}


def hypothesis_key(text: str) -> str:
    """A hypothesis' text with its numbers masked: the same claim in every part."""
    return re.sub(r"-?\d+(\.\d+)?", "#", text)


def agreement(summaries: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(every part's verdict of every hypothesis, one replication line per hypothesis)."""
    rows = []
    for i, s in enumerate(summaries):
        seen: dict[str, int] = {}
        for v in s.get("verdicts", []):
            key = hypothesis_key(v["hypothesis"])
            seen[key] = seen.get(key, -1) + 1  # two claims that differ only in their numbers stay two
            rows.append(
                {
                    "part": i,
                    "key": f"{key} #{seen[key]}",
                    **{
                        k: v.get(k)
                        for k in (
                            "hypothesis",
                            "kind",
                            "verdict",
                            "effect",
                            "ci_lo",
                            "ci_hi",
                            "min_effect",
                            "p_corrected",
                            "n",
                        )
                    },
                }
            )
    long = pd.DataFrame(rows)
    lines = []
    for _, g in long.groupby("key", sort=False):
        verdicts = [
            g[g.part == i]["verdict"].iloc[0] if (g.part == i).any() else "absent" for i in range(len(summaries))
        ]
        decided = {v for v in verdicts if v in DECISIVE}
        if {"supported", "refuted"} <= decided:
            status = "flips"
        elif len(set(verdicts)) == 1:
            status = "replicates" if verdicts[0] in DECISIVE else "inconclusive in every part"
        elif len(decided) <= 1:
            status = "agrees where decisive"
        else:
            status = "differs"
        lines.append({"hypothesis": g["hypothesis"].iloc[0], "kind": g["kind"].iloc[0],
                      "verdicts": " / ".join(verdicts), "replication": status,
                      "effects": " / ".join(f"{e:.3g} [{lo:.3g}, {hi:.3g}]" for e, lo, hi in
                                            zip(g["effect"], g["ci_lo"], g["ci_hi"])),
                      "n": " / ".join(str(int(n)) for n in g["n"])})  # fmt: skip
    return long, pd.DataFrame(lines)


def replicate(exp: Experiment, out: str | Path, parts: int = 2, small: bool = False, resume: bool = False,
              progress: bool = True) -> pd.DataFrame:  # fmt: skip
    """Run `exp` on each of `parts` disjoint parts of the data, then write the agreement tables and a report."""
    if exp.models:
        raise PatchlabError("replicate takes a config of one model", "drop `models`, or replicate each model's config")
    out = claim(out, "replicate")
    summaries = []
    for i in range(parts):
        one = dataclasses.replace(exp, part=[i, parts])
        if progress:
            print(f"{exp.name}: part {i + 1} of {parts} -> {out / 'parts' / f'part-{i}'}")
        summaries.append(run(one, out / "parts" / f"part-{i}", resume=resume, small=small, progress=progress))
    long, lines = agreement(summaries)
    write_table(out / "tables" / "replication_verdicts.csv", long)
    write_table(out / "tables" / "replication.csv", lines)
    write_json(out / "summary.json", {"name": exp.name, "parts": parts, "small": small,
                                     "replication": lines.to_dict(orient="records")})  # fmt: skip
    write_atomic(out / "report.html", _report(exp, lines, parts))
    return lines


def _report(exp: Experiment, lines: pd.DataFrame, parts: int) -> str:
    head = "<tr><th>hypothesis</th><th>replication</th><th>verdicts</th><th>effects [95% CI]</th><th>n</th></tr>"
    body = "".join(
        f"<tr><td>{html.escape(r.hypothesis)}</td><td><b>{r.replication}</b></td><td>{r.verdicts}</td>"
        f"<td>{html.escape(r.effects)}</td><td>{r.n}</td></tr>"
        for r in lines.itertuples()
    )
    return (
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(exp.name)}: replication</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:4px}"
        "table{border-collapse:collapse}</style>"
        f"<h1>{html.escape(exp.name)}: replication over {parts} disjoint parts of the data</h1>"
        f"<table>{head}{body}</table><p>Each part is a complete run under parts/ (its own report leads with its "
        "verdicts). Replicates: the same decisive verdict in every part; flips: supported in one part, refuted in "
        "another.</p>"
    )
