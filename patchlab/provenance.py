"""Provenance: what identifies a result's inputs (the weights' full contents, patchlab's code) and the versions of
the libraries that computed it, recorded in run.json, journals and the CI references."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .data import fingerprint
from .mini import SMALL_MODELS, small_model

if TYPE_CHECKING:  # a type hint only (the experiment layer sits above this one)
    from .experiment import Experiment

LIBRARIES = ("torch", "transformers", "numpy", "scipy", "pandas", "tokenizers")  # what moves a number when upgraded


def code_version() -> str:
    """patchlab's version and, in a git checkout, the commit (with '.dirty' for local changes)."""
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


def versions() -> dict[str, str]:
    """The versions of Python, the numeric libraries and patchlab (with its commit) in this process."""
    found = {"python": platform.python_version(), "patchlab": code_version()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def version_changes(old: dict | None, new: dict) -> list[str]:
    """'name old -> new' for each library whose version differs (patchlab's own commit is left to the code hash)."""
    old = old or {}
    return [f"{k} {old.get(k, '?')} -> {new[k]}" for k in new if k != "patchlab" and old.get(k) != new[k]]


def code_fingerprint() -> str:
    """Hash of patchlab's own source files: results of other code are not mixed into a resumed run."""
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(here.rglob("*.py")) + [here / "demo.yaml"]:
        h.update(str(f.relative_to(here)).encode() + f.read_bytes())
    return h.hexdigest()[:16]


def _cache_file() -> Path:
    return Path(os.environ.get("PATCHLAB_CACHE", Path.home() / ".cache" / "patchlab")) / "file_hashes.json"


def file_hash(path: Path) -> str:
    """SHA-256 of a file's whole contents, cached by (path, size, mtime, inode): a resume does not re-read 15 GB,
    and any rewrite of the file (which changes its mtime or inode) is hashed again."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
    cache = _cache_file()
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    if isinstance(known.get(key), str):
        return known[key]
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    digest = h.hexdigest()
    if st.st_size > 64 << 20:  # only large files are worth a cache entry
        known[key] = digest
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(known))
            os.replace(tmp, cache)
        except OSError:
            pass  # an unwritable cache costs a re-read next time, never a wrong hash
    return digest


def folder_fingerprint(path: Path) -> str:
    """Hash of every file of a checkpoint folder (names, sizes, whole contents; sub-folders included)."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path).as_posix()}:{f.stat().st_size}:{file_hash(f)}".encode())
    return h.hexdigest()[:16]


def model_fingerprint(model: str) -> str:
    """What identifies the weights: the committed connector's hash for patchlab-mini(-qformer), else every file of the
    checkpoint folder, whole (a tensor changed anywhere in a 15 GB file changes it)."""
    if model in SMALL_MODELS:
        return f"{model}:" + hashlib.sha256(small_model(model)[0].read_bytes()).hexdigest()[:16]
    path = Path(model).expanduser()
    return folder_fingerprint(path) if path.is_dir() else model


def run_identity(exp: Experiment) -> dict:
    """What decides a run's rows: config (sharding included), each track's data contents, the weights, the code."""
    return {
        "digest": exp.digest(),
        "data_fingerprint": {t: fingerprint(exp.root(t), t) for t in exp.tracks},
        "model_fingerprint": "+".join(model_fingerprint(m) for m in (exp.models or [exp.model])),
        "code_fingerprint": code_fingerprint(),
    }


def command_identity(args: dict, data: str | None, tracks: Iterable[str], model: str) -> dict:
    """What decides a one-shot command's rows (`patchlab lens`, `patchlab patch`): its arguments, each track's data,
    the weights and the code."""
    return {
        "args": {k: args[k] for k in sorted(args)},
        "data_fingerprint": {t: fingerprint(data, t) for t in tracks} if data else {},
        "model_fingerprint": model_fingerprint(model),
        "code_fingerprint": code_fingerprint(),
    }
