"""`patchlab replicate`: a config's hypotheses on K disjoint seeded parts of the data, and whether each verdict
replicates: the agreement table a reviewer asks for before believing a verdict.

Each part is a complete run (`parts/part-<i>/`, resumable like any run) of the same config on the i-th of K disjoint
stratified parts of every track (`part: [i, K]`; `limit` then applies within the part). Or, from a finished run
(`replicate_run`), no model at all: the run's clips dealt into the same K parts and each part's statistics
recomputed from its rows (a clip's corruption donor may then lie in another part; its rows are still its own).
Hypotheses are matched across parts by their text with the numbers it holds masked (a layer picked from a part's
data, or a clip count, may differ). Layers a hypothesis picks from data are already picked on one half of a part's
clips and tested on the other (patchlab.findings); replication tests the whole claim again on clips the part never
saw.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pandas as pd

from .analyses import merge
from .errors import PatchlabError
from .experiment import Experiment, from_dict
from .io import write_atomic, write_json, write_table
from .outdir import claim
from .runner import finished_tables, is_random, run

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
        one = exp.replace(part=[i, parts])
        if progress:
            print(f"{exp.name}: part {i + 1} of {parts} -> {out / 'parts' / f'part-{i}'}")
        summaries.append(run(one, out / "parts" / f"part-{i}", resume=resume, small=small, progress=progress))
    return write_agreement(exp, out, summaries, small)


def split(exp: Experiment, tables: dict[str, pd.DataFrame], parts: int) -> list[dict[str, pd.DataFrame]]:
    """A run's tables dealt into `parts` disjoint parts of its clips: the clips each part of every whole track holds
    (`part: [i, parts]`, stratified by label) that the run has."""
    dealt = []
    for i in range(parts):
        one = exp.replace(part=[i, parts], limit=None)
        ids = {s.id for track in exp.tracks for s in one.samples(track)}
        dealt.append({name: t[t["sample"].astype(str).isin(ids)].reset_index(drop=True) for name, t in tables.items()})
    return dealt


def replicate_tables(exp: Experiment, tables: dict[str, pd.DataFrame], out: Path, parts: int, small: bool,
                     random_weights: bool = False) -> pd.DataFrame:  # fmt: skip
    """Each part's summary recomputed from its share of a run's tables (`split`), then the agreement, into `out`."""
    summaries = [merge(exp.replace(part=[i, parts]), mine, out / "parts" / f"part-{i}", small=small,
                       random_weights=random_weights) for i, mine in enumerate(split(exp, tables, parts))]  # fmt: skip
    return write_agreement(exp, out, summaries, small)


def replicate_run(run_dir: str | Path, out: str | Path, parts: int = 2) -> pd.DataFrame:
    """`patchlab replicate RUN_FOLDER`: a finished run's clips dealt into `parts` parts, each part's verdicts
    recomputed from the run's rows (no model), and their agreement."""
    run_dir = Path(run_dir)
    try:
        record = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        raise PatchlabError(
            f"{run_dir} is not a patchlab run folder (no readable run.json)", "pass a run's --out"
        ) from None
    if not (run_dir / "summary.json").is_file() or "models" in record.get("config", {}) and record["config"]["models"]:
        raise PatchlabError(f"{run_dir} is not a finished run of one model", "finish it (--resume) or pass another")
    exp = from_dict(record["config"], str(run_dir / "run.json"))
    out = claim(out, "replicate")
    return replicate_tables(exp, finished_tables(exp, run_dir), out, parts, bool(record.get("small")),
                            is_random(exp.model))  # fmt: skip


def write_agreement(exp: Experiment, out: Path, summaries: list[dict], small: bool) -> pd.DataFrame:
    """The agreement of the parts' summaries: tables, summary.json and report.html in `out`."""
    long, lines = agreement(summaries)
    write_table(out / "tables" / "replication_verdicts.csv", long)
    write_table(out / "tables" / "replication.csv", lines)
    write_json(out / "summary.json", {"name": exp.name, "parts": len(summaries), "small": small,
                                     "replication": lines.to_dict(orient="records")})  # fmt: skip
    write_atomic(out / "report.html", _report(exp, lines, len(summaries)))
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
