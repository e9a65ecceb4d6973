"""`patchlab run`: an experiment as shards of samples, each written atomically when done, then merged.

A shard is (track, a run of consecutive samples). Its results go to out/shards/<track>-<index>/ through a
temporary directory renamed into place, so a killed run leaves whole shards or none; `resume` skips the
shards already there. run.json records the run's identity: the config (sharding included), the data's
contents, the weights and patchlab's code. A resume that differs in any of them is refused and says what
changed, and each finished shard is checked (its run, its samples, its files' hashes) before it is reused.
The merged tables are the same whichever executor computed the shards.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import analyses
from .compare import compare, model_slug
from .data import label_set, load_track
from .errors import PatchlabError
from .experiment import SECTIONS, Experiment, from_dict
from .io import read_table, write_json
from .mini import SMALL_MODELS
from .outdir import claim, clear_own, record
from .preflight import check_audio, check_device, check_layers
from .provenance import code_version, run_identity, version_changes, versions

RUN_ENTRIES = {"run.json", "shards", "tables", "plots", "summary.json", "report.html", "models"}  # what a run writes
_MODELS: dict = {}  # one model replica per process (a Ray worker keeps its own)


@dataclass(frozen=True)
class Shard:
    """A track's run of consecutive samples; or, with `phase`, an analysis' second phase on the samples it names,
    each with its payload in `regions` (a screened run's top-up: "audio+text", the regions patched for real)."""

    track: str
    index: int
    start: int
    stop: int
    samples: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    phase: str = ""  # the second phase it belongs to (patchlab.analyses: an analysis' `second_phase`)

    @property
    def name(self) -> str:
        return f"{self.track}-{self.phase + '-' if self.phase else ''}{self.index:04d}"


def plan(exp: Experiment) -> list[Shard]:
    """Shards of `shard_size` consecutive samples per track (the first `limit` samples of each)."""

    shards = []
    for track in exp.tracks:
        ids = [s.id for s in exp.samples(track)]
        for i, start in enumerate(range(0, len(ids), exp.shard_size)):
            stop = min(len(ids), start + exp.shard_size)
            shards.append(Shard(track, i, start, stop, tuple(ids[start:stop])))
    return shards


def preflight(exp: Experiment) -> None:
    """Every input checked before a model loads or a file is written: the device, each planned clip's audio header,
    and the configured layers against each model's depth."""

    check_device(exp.device)
    check_audio(s for t in exp.tracks for s in exp.samples(t))
    layers = {f"{k}.layers": getattr(exp, k).layers for k, opts in SECTIONS.items() if "layers" in opts.model_fields}
    for model in exp.models or [exp.model]:
        check_layers(model, layers)
    analyses.check(exp)


def check_label_sets(exp: Experiment) -> None:
    """Every track's labels tokenized in every format the run reads them in, on the loaded model, before the first
    shard: two labels that share a first token (Animal's cow and crow in `mc`) are refused before any work, naming
    the track."""
    lalm = model_for(exp)
    for track in exp.tracks:
        labels = sorted({s.label for s in load_track(exp.root(track), track)})
        for fmt in dict.fromkeys([exp.prompt, *exp.formats]):
            try:
                label_set(lalm, labels, fmt, exp.label_space)
            except PatchlabError as e:
                raise PatchlabError(f"track {track}: {e.what}", e.fix) from None


def model_for(exp: Experiment):
    """The process's model replica for this experiment (loaded once)."""
    from .models import load

    key = (exp.model, exp.variant, exp.device, exp.dtype, exp.device_map)
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = load(
            exp.model,
            device=exp.device,
            dtype=exp.dtype,
            device_map=exp.device_map,
            trust_remote_code=exp.trust_remote_code,
            variant=exp.variant,
        )
    return _MODELS[key]


def _fault(shard: Shard, out: Path) -> None:
    """Test hook: PATCHLAB_FAULT=<shard name> makes the process SIGKILL itself there, once (marker file)."""
    if os.environ.get("PATCHLAB_FAULT") == shard.name:
        marker = out / f".fault-{shard.name}"
        if not marker.exists():
            marker.write_text("killed once\n")
            os.kill(os.getpid(), signal.SIGKILL)


def compute_shard(config: dict, shard: Shard, out: str, run_id: str = "") -> str:
    """Compute one shard's tables and write them atomically (also what a Ray task runs).

    Its `done` file records the run it belongs to, its samples and each table's hash, checked on resume.
    """
    exp = from_dict(config, "run config")
    out_dir = Path(out)
    final = out_dir / "shards" / shard.name
    if (final / "done").exists():
        return shard.name
    _fault(shard, out_dir)
    first = None
    if shard.phase:  # a second phase reads its track's finished first-phase tables
        mine = [s for s in plan(exp) if s.track == shard.track]
        first = lambda name: _concat(out_dir, mine, name)  # noqa: E731
    tables = analyses.shard_tables(model_for(exp), exp, shard, first)
    texts = {f"{name}.csv": table.to_csv(index=False) for name, table in tables.items()}
    done = {"run": run_id, "shard": shard.name, "samples": list(shard.samples)}
    done["files"] = {name: hashlib.sha256(text.encode()).hexdigest() for name, text in texts.items()}
    if shard.regions:
        done["regions"] = list(shard.regions)
    texts["done"] = json.dumps(done, indent=1) + "\n"
    place_shard(
        out_dir, shard.name, lambda tmp: [(tmp / n).write_text(t, encoding="utf-8") for n, t in texts.items()], texts
    )
    return shard.name


def place_shard(out: Path, name: str, fill, files: dict[str, str | bytes]) -> None:
    """Write a shard's files into a fresh temporary folder (`fill(folder)`), list them in the run's manifest, then
    rename the folder into shards/<name>: a killed run leaves whole shards or none, and nothing of the user's is
    removed (a leftover folder of that name is cleared of patchlab's files only, and refused if anything else is in
    it)."""
    shards = out / "shards"
    final = shards / name
    if not final.resolve().is_relative_to(shards.resolve()):
        raise PatchlabError(f"shard name {name!r} leads out of {shards}", "name tracks without '/', '\\' or '..'")
    shards.mkdir(parents=True, exist_ok=True)
    for f, data in files.items():
        record(final / f, data)
    if final.exists():
        left = clear_own(out, {f"shards/{name}"})
        if final.exists():
            raise PatchlabError(
                f"{final} holds files patchlab did not write ({', '.join(left[:3])})",
                f"move them out of {final} to have the shard computed, or use a new --out",
            )
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=shards))
    try:
        fill(tmp)
        os.replace(tmp, final)
    except BaseException:  # a full disk or a kill mid-write: no half-written temporary folder is left behind
        shutil.rmtree(tmp, ignore_errors=True)  # made by this call a moment ago: only patchlab's files are in it
        raise


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_shard(out: Path, shard: Shard, run_id: str) -> None:
    """Refuse to reuse a finished shard that another run wrote, that holds other samples, or whose tables changed."""
    where = out / "shards" / shard.name
    try:
        done = json.loads((where / "done").read_text())
    except (OSError, json.JSONDecodeError):
        done = {}
    problem = None
    if done.get("run") != run_id:
        problem = "was written by another run (or an older patchlab)"
    elif done.get("samples") != list(shard.samples) or done.get("regions", []) != list(shard.regions):
        problem = "holds other samples (or regions) than this run plans for it"
    else:
        for name, digest in done.get("files", {}).items():
            if not (where / name).is_file() or _sha(where / name) != digest:
                problem = f"has a table ({name}) changed or removed after it was written"
                break
    if problem:
        raise PatchlabError(
            f"finished shard {where} {problem}: resuming would mix results",
            f"remove {where} to have it computed again, or write the run to a new --out",
        )


def _start(exp: Experiment, out: Path, resume: bool, small: bool) -> str:
    """Record the run's identity in run.json, or check a resumed run's against it; returns the run id."""
    meta = out / "run.json"
    ident = run_identity(exp)
    inputs = analyses.inputs(exp)
    if inputs:  # absent when no analysis reads other files, so older runs keep their identity
        ident["inputs"] = inputs
    run_id = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    record = {
        "name": exp.name,
        "run_id": run_id,
        **ident,
        "small": small,
        "code_version": code_version(),
        "versions": versions(),
        "config": exp.config(),
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
        old_data = old.get("data_fingerprint") or {}
        changed = [t for t in exp.tracks if old_data.get(t) != record["data_fingerprint"][t]]
        if changed:
            raise PatchlabError(
                f"{out} holds a run on other data: the contents of track(s) "
                f"{', '.join(f'{t} (under {exp.root(t)})' for t in changed)} "
                "changed since it started (metadata.csv or audio files)",
                "restore the data as it was to resume, or run the changed data into a new --out",
            )
        if old.get("inputs") != record.get("inputs"):
            raise PatchlabError(
                f"{out} holds results read through other files ({old.get('inputs')}; now {record.get('inputs')})",
                "resume with the files that started the run, or start the run again in a new --out",
            )
        if old.get("code_fingerprint") != record["code_fingerprint"]:
            raise PatchlabError(
                f"{out} holds results of other patchlab code ({old.get('code_version')}; now {record['code_version']})",
                "resume with the code that started the run, or start the run again in a new --out",
            )
        moved = version_changes(old.get("versions"), record["versions"])
        if moved:
            raise PatchlabError(
                f"{out} was started with other library versions ({'; '.join(moved)}): its finished shards would mix "
                "with numbers these versions compute",
                "resume in the environment that started it (pip install -r requirements.lock), or use a new --out",
            )
        return run_id
    write_json(meta, record)
    return run_id


def run(
    exp: Experiment,
    out: str | Path,
    resume: bool = False,
    executor: str = "local",
    address: str | None = None,
    small: bool = False,
    progress: bool = True,
    command: str = "run",
) -> dict:
    """Run every shard not yet written, then merge shards into tables, plots, summary.json and report.html.

    `command` names what writes the folder (`patchlab lens` runs an in-memory experiment into a folder of its own)."""
    exp = exp.sized(small)
    if executor not in ("local", "ray"):
        raise PatchlabError(f"unknown executor {executor!r}", "use local or ray")
    shards = plan(exp)  # reads every track's metadata first: bad data is refused before anything is written
    preflight(exp)
    for model in exp.models or []:  # a typo in the second model must not cost the first model's whole run
        if model not in SMALL_MODELS and not Path(model).expanduser().is_dir():
            raise PatchlabError(
                f"model {model!r} in `models` is neither patchlab-mini(-qformer) nor a checkpoint folder",
                "give each model as a checkpoint folder (the hub is off here) or by patchlab's own model names",
            )
    fresh = not Path(out).expanduser().exists()
    out = claim(out, command)  # an --out that is a file or a folder of the user's is refused before a model loads
    if executor == "local" and not exp.models:  # a Ray driver loads no model: its first shard refuses instead
        try:
            check_label_sets(exp)
        except PatchlabError:
            if fresh:  # the folder this call made holds only its marker: removed, so a refusal leaves nothing
                shutil.rmtree(out)
            raise
    if exp.models:
        return _run_models(exp, out, resume, executor, address, small, progress)
    run_id = _start(exp, out, resume, small)
    _execute(exp, out, shards, run_id, executor, address, progress)
    second = topup_shards(exp, out, shards)  # a screened run's second phase, planned from the first's tables
    _execute(exp, out, second, run_id, executor, address, progress, "second-phase shards")
    return _finish(exp, out, shards + second, small)


def _execute(exp: Experiment, out: Path, shards: list[Shard], run_id: str, executor: str, address, progress: bool,
             what: str = "shards") -> None:  # fmt: skip
    """Compute every shard not yet written (finished ones are checked, then reused)."""
    from tqdm.auto import tqdm

    finished = [s for s in shards if (out / "shards" / s.name / "done").exists()]
    for s in finished:
        check_shard(out, s, run_id)
    todo = [s for s in shards if s not in finished]
    if finished and progress:
        print(f"resuming {out}: {len(finished)} of {len(shards)} {what} already done, reused")
    if not todo:
        return
    config = exp.config()
    if executor == "local":
        for s in tqdm(todo, desc=f"{exp.name}: {what}", unit="shard", disable=not progress):
            compute_shard(config, s, str(out), run_id)
    else:
        from .executors import run_ray

        run_ray(compute_shard, config, todo, str(out), address, exp.device, run_id)


def topup_shards(exp: Experiment, out: Path, shards: list[Shard]) -> list[Shard]:
    """The second phase of each analysis that has one (a screened run's top-up with `ground.screen_tol`), planned
    per track from its finished first-phase shards: the clips it names, in the track's order, `shard_size` a shard."""
    second = []
    for track in exp.tracks:
        mine = [s for s in shards if s.track == track]
        for phase, extra in analyses.second_phases(exp, track, lambda name, mine=mine: _concat(out, mine, name)):
            ids = [i for s in mine for i in s.samples if i in extra]
            for k, start in enumerate(range(0, len(ids), exp.shard_size)):
                chunk = ids[start : start + exp.shard_size]
                second.append(Shard(track, k, 0, 0, tuple(chunk), tuple("+".join(extra[i]) for i in chunk), phase))
    return second


def _concat(out: Path, shards: list[Shard], name: str) -> pd.DataFrame:
    """One table of finished shards, concatenated in plan order."""
    parts = [read_table(f) for s in shards if (f := out / "shards" / s.name / f"{name}.csv").is_file()]
    parts = [t for t in parts if len(t)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _run_models(exp: Experiment, out: Path, resume: bool, executor: str, address, small: bool, progress: bool) -> dict:
    """Each model of `exp.models` a complete run of the same config under out/models/<name>/ (each resumable as any
    run), then the comparison (patchlab.compare) in `out`."""
    _start(exp, out, resume, small)
    taken: set[str] = set()
    runs = {}
    for model in exp.models:
        one = exp.replace(model=model, models=None)
        name = model_slug(model, taken)
        where = out / "models" / name
        if progress:
            print(f"{exp.name}: {model} -> {where}")
        run(one, where, resume, executor, address, False, progress)
        runs[name] = where
    return compare(exp, out, runs, small)


def finished_tables(exp: Experiment, out: Path, shards: list[Shard] | None = None) -> dict[str, pd.DataFrame]:
    """Every finished shard's tables of run `out` (all its shards, top-ups included, when `shards` is None),
    concatenated in plan order: what the merge reads (and what patchlab.kept stores)."""
    if shards is None:
        shards = plan(exp)
        shards += topup_shards(exp, out, shards)
    names = {f.stem for s in shards for f in (out / "shards" / s.name).glob("*.csv")}
    return {k: t for k in sorted(names) if len(t := _concat(out, shards, k))}


def _finish(exp: Experiment, out: Path, shards: list[Shard], small: bool) -> dict:
    """Every shard's tables, concatenated in plan order, merged into tables, plots, summary.json and report.html."""
    merged = finished_tables(exp, out, shards)
    return analyses.merge(exp, merged, out, small=small, random_weights=is_random(exp.model))


def merge_runs(runs: list[str | Path], out: str | Path, progress: bool = True) -> dict | None:
    """Merge separate runs of one config (e.g. shards computed on several machines) into `out`.

    The runs must share their identity (config, data, weights, code); each finished shard is checked as a resume
    checks it, and a shard two runs both finished must hold the same tables. With every planned shard present the
    merged run is finished (summary, report); otherwise `out` is a run folder that `patchlab run --resume` completes.
    """
    runs = [Path(r) for r in runs]
    records = []
    for r in runs:
        try:
            records.append(json.loads((r / "run.json").read_text()))
        except (OSError, json.JSONDecodeError):
            raise PatchlabError(
                f"{r} is not a patchlab run folder (no readable run.json)", "pass run --out folders"
            ) from None
    first = records[0]
    for r, rec in zip(runs[1:], records[1:]):
        if rec.get("run_id") != first.get("run_id"):
            keys = ("digest", "data_fingerprint", "model_fingerprint", "code_fingerprint")
            changed = [k for k in keys if rec.get(k) != first.get(k)]
            raise PatchlabError(
                f"{r} is a run of something else than {runs[0]} (differs in: {', '.join(changed) or 'run id'})",
                "merge only runs of the same config on the same data, weights and patchlab code",
            )
    exp = from_dict(first["config"], f"{runs[0]}/run.json")
    small = bool(first.get("small"))
    shards = plan(exp)
    out = claim(out, "merge")
    run_id = _start(exp, out, resume=(out / "run.json").exists(), small=small)
    if run_id != first["run_id"]:
        raise PatchlabError(
            f"the runs were made with other code, data or weights than patchlab sees now (run {first['run_id']}, "
            f"now {run_id})",
            "merge with the patchlab and data the runs were made with",
        )
    missing = _gather(runs, out, shards, run_id)
    second = [] if missing else topup_shards(exp, out, shards)
    missing += _gather(runs, out, second, run_id)
    if missing:
        if progress:
            print(f"{len(missing)} shards are in none of the runs ({', '.join(missing[:5])}); "
                  f"finish with: patchlab run CONFIG --out {out} --resume")  # fmt: skip
        return None
    return _finish(exp, out, shards + second, small)


def _gather(runs: list[Path], out: Path, shards: list[Shard], run_id: str) -> list[str]:
    """Copy each shard that one of `runs` finished into `out` (checked; two runs' copies must agree); returns the
    names of those no run has."""
    missing = []
    for s in shards:
        have = [r for r in runs if (r / "shards" / s.name / "done").exists()]
        for r in have:
            check_shard(r, s, run_id)
        files = {json.dumps(json.loads((r / "shards" / s.name / "done").read_text())["files"], sort_keys=True)
                 for r in have}  # fmt: skip
        if len(files) > 1:
            raise PatchlabError(
                f"shard {s.name} differs between {', '.join(map(str, have))}: the same shard gave other tables",
                "keep the shard from one run only (remove it from the others), or recompute it",
            )
        target = out / "shards" / s.name
        if have and not (target / "done").exists():
            source = have[0] / "shards" / s.name
            files = {f.name: f.read_bytes() for f in sorted(source.iterdir()) if f.is_file()}
            copy = lambda tmp, src=source, fs=files: [shutil.copy2(src / f, tmp / f) for f in fs]  # noqa: E731
            place_shard(out, s.name, copy, files)
        if not have and not (target / "done").exists():
            missing.append(s.name)
    return missing


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
        else:  # text: equal, or missing in both (pandas' string dtype keeps NaN through astype(str))
            xs, ys = pd.Series(x, dtype=object), pd.Series(y, dtype=object)
            if not ((xs.astype(str) == ys.astype(str)) | (xs.isna() & ys.isna())).all():
                return False
    return True
