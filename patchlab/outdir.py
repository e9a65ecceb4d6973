"""Output folders: patchlab writes only into folders it made (or empty ones), for one kind of command, and deletes or
overwrites only the files it wrote there, by a manifest of them (never by folder or file names).

A folder patchlab writes into holds a marker (`.patchlab`, the kind of command that owns it) and a manifest
(`.patchlab-manifest`: each file patchlab wrote there, with the hash of what it wrote). A non-empty folder without
the marker is someone else's and is refused before anything is written; so is a folder another kind of command owns
(a `lens` folder is not a run). A file in an owned folder that the manifest does not list, or that changed since
patchlab wrote it, is the user's: never overwritten, never removed. Creating the marker also proves the folder is
writable, so a bad `--out` fails before any work.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .errors import PatchlabError

MARKER = ".patchlab"
MANIFEST = ".patchlab-manifest"
KINDS = {"run": "run", "merge": "run", "demo": "run"}  # commands that write the same kind of folder (a run)


def kind_of(command: str) -> str:
    """The kind of folder a command writes: a run (run, merge, demo) or the command's own."""
    return KINDS.get(command, command)


def _owner(out: Path) -> str | None:
    """The kind of command that owns `out` (None: no marker)."""
    try:
        record = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return None if not (out / MARKER).exists() else "?"
    return kind_of(str(record.get("command", "?"))) if isinstance(record, dict) else "?"


def claim(out: str | Path, command: str) -> Path:
    """Make `out` an output folder of `command`: create it, or take an empty one or one that the same kind of
    command wrote before; refuse anything else before writing."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise PatchlabError(f"output path {out} is a file, not a folder", "pass a folder (new or empty) as --out")
    owner = _owner(out) if out.is_dir() else None
    if out.is_dir() and owner is None and any(out.iterdir()):
        raise PatchlabError(
            f"output folder {out} holds files patchlab did not write (it has no {MARKER} marker)",
            "pass a new or empty folder as --out: patchlab never writes into, or deletes, a folder of yours",
        )
    if owner is not None and owner != kind_of(command):
        raise PatchlabError(
            f"output folder {out} holds the output of `patchlab {owner}`, not of `patchlab {command}`",
            f"pass another --out for `patchlab {command}` (each command writes its own folder)",
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        if owner is None:
            (out / MARKER).write_text(json.dumps({"written_by": "patchlab", "command": kind_of(command)}) + "\n")
        (out / MANIFEST).touch()
    except OSError as e:
        raise PatchlabError(
            f"cannot write to output folder {out} ({e.strerror or e})",
            "pass an --out in a folder you can write to",
        ) from e
    return out


def root_of(path: Path) -> Path | None:
    """The nearest folder above `path` that patchlab owns (holds the marker), or None."""
    for parent in Path(os.path.abspath(path)).parents:
        if (parent / MARKER).is_file():
            return parent
    return None


def written(root: Path) -> dict[str, str]:
    """The files patchlab wrote in an owned folder: relative path -> sha256 of what it wrote ("-": a journal it
    appends to, whatever its contents). A later line for the same path replaces an earlier one."""
    try:
        lines = (root / MANIFEST).read_text().splitlines()
    except OSError:
        return {}
    return dict(reversed(line.split("\t", 1)[::-1]) for line in lines if "\t" in line)


def _digest(data: str | bytes | None) -> str:
    if data is None:
        return "-"
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _unchanged(path: Path, digest: str) -> bool:
    """Whether the file on disk is still what patchlab wrote there."""
    return digest == "-" or (path.is_file() and _digest(path.read_bytes()) == digest)


def record(path: Path, data: str | bytes | None = None) -> None:
    """Before writing `data` to `path`: list it (with its hash) in its owned folder's manifest; refuse if a file is
    there that patchlab did not write, or that was changed since (the user's). `data=None`: a journal patchlab
    appends to. Paths outside any owned folder are the caller's own choice and are not guarded."""
    path = Path(os.path.abspath(path))
    root = root_of(path)
    if root is None:
        return
    rel = path.relative_to(root).as_posix()
    mine = written(root)
    if path.exists() or path.is_symlink():
        if rel not in mine or path.is_symlink() or not _unchanged(path, mine[rel]):
            raise PatchlabError(
                f"{path} exists and patchlab did not write it (or it was changed since): it will not be overwritten",
                f"move it out of {root}, or pass a new --out",
            )
    digest = _digest(data)
    if mine.get(rel) != digest:
        with (root / MANIFEST).open("a") as f:
            f.write(f"{rel}\t{digest}\n")


def clear_own(out: str | Path, entries: set[str]) -> list[str]:
    """Remove the files patchlab wrote under `entries` (paths relative to an owned folder, e.g. "tables" or
    "shards/Gender-0000"), then the folders they leave empty; every other file stays. Returns those left in place."""
    out = Path(out)
    if not (out / MARKER).exists():
        raise PatchlabError(f"{out} was not written by patchlab", "pass a new or empty folder as --out")
    mine = written(out)
    under = {e.strip("/") for e in entries}
    gone = {rel for rel in mine if any(rel == e or rel.startswith(e + "/") for e in under)}
    for rel in sorted(gone):
        p = out / rel
        if (p.is_file() and not p.is_symlink()) and _unchanged(p, mine[rel]):
            p.unlink()
    left = []
    for entry in sorted(under):
        top = out / entry
        if not top.is_dir() or top.is_symlink():
            left += [entry] if top.exists() or top.is_symlink() else []
            continue
        for folder, _, files in sorted(os.walk(top, topdown=False)):
            left += [Path(folder, f).relative_to(out).as_posix() for f in files]
            if not os.listdir(folder):
                os.rmdir(folder)
    tmp = out / f"{MANIFEST}.tmp{os.getpid()}"
    kept = {rel: d for rel, d in mine.items() if rel not in gone or (out / rel).exists()}
    tmp.write_text("".join(f"{rel}\t{d}\n" for rel, d in sorted(kept.items())))
    os.replace(tmp, out / MANIFEST)
    return sorted(left)
