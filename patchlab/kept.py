"""Kept runs: a finished run's merged tables stored compactly beside its run record, and its summary, verdicts,
tables and report recomputed from them without the model.

A kept run is what the statistics read: the shard tables the run merged, as parquet (zstd; a float64 column whose
every value is a float32 is stored as float32 and widened back exactly on reading; the lens' per-label
probabilities and margins, which no statistic reads, left out), and its run.json (config, data, weights, code and
library versions). `recompute` runs the same merge on them (for a config of several models, each model's merge and
then the comparison), and `replicate` deals their clips into disjoint parts and recomputes each part's verdicts
(patchlab.replicate.split): the statistics layer checked at the n where verdicts are decisive, in seconds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .analyses import merge
from .compare import compare
from .errors import PatchlabError
from .experiment import Experiment, from_dict
from .replicate import replicate_tables
from .runner import finished_tables, is_random

RECORD = "run.json"  # a run's record (config, identity, versions), kept as the run wrote it
SUFFIX = ".parquet"
UNREAD = {  # columns of a table that no statistic reads (the steering vectors: read by the second phase alone)
    "lens": re.compile(r"margin|p_(?!true$).+"),
    "steer_direction": re.compile(r"v\d+"),
}


def compact(name: str, table: pd.DataFrame) -> pd.DataFrame:
    """`table` without the columns no statistic reads, each float64 column that holds float32 values as float32."""
    unread = UNREAD.get(name)
    table = table[[c for c in table.columns if not (unread and unread.fullmatch(str(c)))]].copy()
    for c in table.columns:
        x = table[c].to_numpy()
        if x.dtype == np.float64 and np.array_equal(x.astype(np.float32).astype(np.float64), x, equal_nan=True):
            table[c] = x.astype(np.float32)
    return table


def write_kept(path: Path, table: pd.DataFrame) -> None:
    table.to_parquet(path, compression="zstd", index=False)


def read_kept(path: Path) -> pd.DataFrame:
    """A kept table as the run's merge read it (float32 columns widened back to float64, exactly)."""
    table = pd.read_parquet(path)
    return table.astype({c: np.float64 for c in table.columns if table[c].dtype == np.float32})


def keep(run: str | Path, dest: str | Path) -> list[Path]:
    """Store finished run `run` (a run, or a run of several models) in the new folder `dest`: its record and, per
    (sub-)run, the tables its merge read. Returns the files written."""
    run, dest = Path(run), Path(dest)
    if not (run / "summary.json").is_file():
        raise PatchlabError(f"{run} is not a finished patchlab run folder (no summary.json)", "pass a run's --out")
    if dest.exists() and any(dest.iterdir()):
        raise PatchlabError(f"{dest} is not empty: keep writes only into a new folder", "remove it or pass another")
    dest.mkdir(parents=True, exist_ok=True)
    (dest / RECORD).write_text((run / RECORD).read_text())
    written = [dest / RECORD]
    if (run / "models").is_dir():  # a config of several models: each model's run
        for sub in sorted(p for p in (run / "models").iterdir() if p.is_dir()):
            written += keep(sub, dest / "models" / sub.name)
        return written
    (dest / "tables").mkdir()
    for name, table in finished_tables(experiment_of(dest), run).items():
        path = dest / "tables" / f"{name}{SUFFIX}"
        write_kept(path, compact(name, table))
        written.append(path)
    return written


def experiment_of(kept: Path, data: str | Path | None = None) -> Experiment:
    """The experiment a kept run was made with (its data folder replaced by `data` when given)."""
    exp = from_dict(json.loads((kept / RECORD).read_text())["config"], str(kept / RECORD))
    if data is not None:
        exp.data = str(data)
    return exp


def recompute(kept: str | Path, out: str | Path, data: str | Path | None = None) -> dict:
    """Recompute a kept run's summary (verdicts, tables, plots, report) into `out` from its stored tables, as the run
    merged them; `data` replaces the data folder its config names (the merge reads each track's label set)."""
    kept, out = Path(kept), Path(out)
    record = json.loads((kept / RECORD).read_text())
    exp = experiment_of(kept, data)
    if exp.models:
        runs = {}
        for sub in sorted(p for p in (kept / "models").iterdir() if p.is_dir()):
            recompute(sub, out / "models" / sub.name, data)
            runs[experiment_of(sub).model] = out / "models" / sub.name
        missing = [m for m in exp.models if m not in runs]
        if missing:
            raise PatchlabError(f"{kept} keeps no run of {', '.join(missing)}", "keep the whole run (models/ too)")
        return compare(exp, out, {runs[m].name: runs[m] for m in exp.models}, record["small"])
    return merge(exp, kept_tables(kept), out, small=record["small"], random_weights=is_random(exp.model))


def kept_tables(kept: Path) -> dict[str, pd.DataFrame]:
    """A kept run's tables, as its merge read them."""
    return {p.name.removesuffix(SUFFIX): read_kept(p) for p in sorted((kept / "tables").glob(f"*{SUFFIX}"))}


def replicate(kept: str | Path, out: str | Path, parts: int, data: str | Path | None = None) -> dict:
    """A kept run's clips dealt into `parts` disjoint parts, each part's verdicts recomputed, and their agreement
    (patchlab.replicate), into `out`; returns the agreement's summary."""
    kept, out = Path(kept), Path(out)
    record = json.loads((kept / RECORD).read_text())
    exp = experiment_of(kept, data)
    replicate_tables(exp, kept_tables(kept), out, parts, record["small"], is_random(exp.model))
    return json.loads((out / "summary.json").read_text())
