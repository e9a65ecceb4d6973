"""`patchlab run`: an experiment as shards of samples, each written atomically when done, then merged.

A shard is (track, a run of consecutive samples). Its results go to out/shards/<track>-<index>/ through a
temporary directory renamed into place, so a killed run leaves whole shards or none; `resume` skips the
shards already there. run.json records the config, its digest and the code version; resuming a different
config is refused. The merged tables are the same whichever executor computed the shards.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__
from .errors import PatchlabError
from .experiment import Experiment, from_dict
from .io import write_json

_MODELS: dict = {}  # one model replica per process (a Ray worker keeps its own)


@dataclass(frozen=True)
class Shard:
    track: str
    index: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        return f"{self.track}-{self.index:04d}"


def code_version() -> str:
    """patchlab's version and, in a git checkout, the commit (with '+dirty' for local changes)."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--", "."], capture_output=True, text=True
        ).stdout.strip()
        return f"{__version__}+{commit}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.CalledProcessError):
        return __version__


def plan(exp: Experiment) -> list[Shard]:
    """Shards of `shard_size` consecutive samples per track (the first `limit` samples of each)."""
    from .data import load_track

    shards = []
    for track in exp.tracks:
        n = len(load_track(exp.data, track, exp.limit))
        for i, start in enumerate(range(0, n, exp.shard_size)):
            shards.append(Shard(track, i, start, min(n, start + exp.shard_size)))
    return shards


def model_for(exp: Experiment):
    """The process's model replica for this experiment (loaded once)."""
    from .models import load

    key = (exp.model, exp.device, exp.dtype, exp.device_map)
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = load(exp.model, device=exp.device, dtype=exp.dtype, device_map=exp.device_map)
    return _MODELS[key]


def _fault(shard: Shard, out: Path) -> None:
    """Test hook: PATCHLAB_FAULT=<shard name> makes the process SIGKILL itself there, once (marker file)."""
    if os.environ.get("PATCHLAB_FAULT") == shard.name:
        marker = out / f".fault-{shard.name}"
        if not marker.exists():
            marker.write_text("killed once\n")
            os.kill(os.getpid(), signal.SIGKILL)


def compute_shard(config: dict, shard: Shard, out: str) -> str:
    """Compute one shard's tables and write them atomically (also what a Ray task runs)."""
    from .analyses import shard_tables

    exp = from_dict(config, "run config")
    out_dir = Path(out)
    final = out_dir / "shards" / shard.name
    if (final / "done").exists():
        return shard.name
    _fault(shard, out_dir)
    tables = shard_tables(model_for(exp), exp, shard)
    tmp = out_dir / "shards" / f".{shard.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, table in tables.items():
        table.to_csv(tmp / f"{name}.csv", index=False)
    (tmp / "done").write_text("ok\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return shard.name


def model_fingerprint(model: str) -> str:
    """What identifies the weights: the committed projector's hash for patchlab-mini, else the checkpoint's files."""
    import hashlib

    if model == "patchlab-mini":
        from .mini.build import PROJECTOR

        return "patchlab-mini:" + hashlib.sha256(PROJECTOR.read_bytes()).hexdigest()[:16]
    path = Path(model).expanduser()
    if not path.is_dir():
        return model
    files = sorted((f.name, f.stat().st_size) for f in path.iterdir() if f.is_file())
    config = (path / "config.json").read_bytes() if (path / "config.json").exists() else b""
    return hashlib.sha256(repr(files).encode() + config).hexdigest()[:16]


def _start(exp: Experiment, out: Path, resume: bool, small: bool) -> None:
    meta = out / "run.json"
    record = {
        "name": exp.name,
        "digest": exp.digest(),
        "model_fingerprint": model_fingerprint(exp.model),
        "small": small,
        "code_version": code_version(),
        "config": dataclasses.asdict(exp),
    }
    if meta.exists():
        old = json.loads(meta.read_text())
        if not resume:
            raise PatchlabError(
                f"{out} already holds results of {old.get('name')!r}",
                "pass --resume to continue that run, or choose another --out",
            )
        if old.get("digest") != record["digest"]:
            changed = sorted(k for k in record["config"] if old.get("config", {}).get(k) != record["config"][k])
            raise PatchlabError(
                f"{out} holds a run of a different config (changed: {', '.join(changed)})",
                "resume with the same config, or write to another --out",
            )
        if old.get("model_fingerprint") != record["model_fingerprint"]:
            raise PatchlabError(
                f"{out} holds results of other weights of {exp.model} than those loaded now",
                "write to another --out (the finished shards used the old weights)",
            )
        if old.get("code_version") != record["code_version"]:
            warnings.warn(
                f"resuming results of patchlab {old.get('code_version')} with {record['code_version']}", stacklevel=2
            )
        return
    write_json(meta, record)


def run(
    exp: Experiment,
    out: str | Path,
    resume: bool = False,
    executor: str = "local",
    address: str | None = None,
    small: bool = False,
    progress: bool = True,
) -> dict:
    """Run every shard not yet written, then merge shards into tables, plots, summary.json and report.html."""
    from tqdm.auto import tqdm

    from .analyses import merge

    exp = exp.sized(small)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _start(exp, out, resume, small)
    shards = plan(exp)
    todo = [s for s in shards if not (out / "shards" / s.name / "done").exists()]
    config = dataclasses.asdict(exp)
    if executor == "local":
        for s in tqdm(todo, desc=f"{exp.name}: shards", unit="shard", disable=not progress):
            compute_shard(config, s, str(out))
    elif executor == "ray":
        from .executors import run_ray

        run_ray(config, todo, str(out), address, exp.device)
    else:
        raise PatchlabError(f"unknown executor {executor!r}", "use local or ray")
    tables = {}
    for s in shards:
        for f in sorted((out / "shards" / s.name).glob("*.csv")):
            table = pd.read_csv(f)
            if len(table):
                tables.setdefault(f.stem, []).append(table)
    merged = {k: pd.concat(v, ignore_index=True) for k, v in tables.items()}
    return merge(exp, merged, out, small=small, random_weights=is_random(exp.model))


def is_random(model: str) -> bool:
    """Whether a checkpoint directory is one patchlab made with random weights (its config says so)."""
    cfg = Path(model) / "config.json"
    return cfg.exists() and bool(json.loads(cfg.read_text()).get("patchlab_random_weights", False))


def tables_equal(a: pd.DataFrame, b: pd.DataFrame, tol: float = 1e-5) -> bool:
    """Same columns and rows, numbers within `tol` (how runs are compared across executors and with references)."""
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return False
    for c in a.columns:
        x, y = a[c].to_numpy(), b[c].to_numpy()
        if np.issubdtype(x.dtype, np.number) and np.issubdtype(y.dtype, np.number):
            if not np.allclose(x, y, rtol=tol, atol=tol, equal_nan=True):
                return False
        elif not (pd.Series(x).astype(str) == pd.Series(y).astype(str)).all():
            return False
    return True
