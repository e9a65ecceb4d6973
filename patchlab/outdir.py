"""Output folders: patchlab writes only into folders it made (or empty ones) and deletes only what it wrote.

A folder patchlab writes into holds a marker file (`.patchlab`). A non-empty folder without it is someone
else's: it is refused, never written into or removed. Creating the marker also proves the folder is
writable, so a bad `--out` fails before any work starts.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .errors import PatchlabError

MARKER = ".patchlab"


def claim(out: str | Path, command: str) -> Path:
    """Make `out` an output folder of `command`: create it, or take an empty one or one patchlab wrote before."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise PatchlabError(f"output path {out} is a file, not a folder", "pass a folder (new or empty) as --out")
    if out.is_dir() and not (out / MARKER).exists() and any(out.iterdir()) and not _earlier_run(out):
        raise PatchlabError(
            f"output folder {out} holds files patchlab did not write (it has no {MARKER} marker)",
            "pass a new or empty folder as --out: patchlab never writes into, or deletes, a folder of yours",
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        marker = out / MARKER
        if not marker.exists():
            marker.write_text(json.dumps({"written_by": "patchlab", "command": command}) + "\n")
        probe = out / f".{MARKER}.probe"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise PatchlabError(
            f"cannot write to output folder {out} ({e.strerror or e})",
            "pass an --out in a folder you can write to",
        ) from e
    return out


def _earlier_run(out: Path) -> bool:
    """A run folder written by a patchlab from before the marker: run.json with its config, and only a run's entries."""
    import json

    from .runner import RUN_ENTRIES

    try:
        record = json.loads((out / "run.json").read_text())
    except (OSError, ValueError):
        return False
    names = {p.name for p in out.iterdir()}
    return isinstance(record, dict) and "config" in record and names <= RUN_ENTRIES | {"synthetic-data"}


def clear_own(out: str | Path, entries: set[str], keep: set[str] = frozenset()) -> None:
    """Remove patchlab's own `entries` from a claimed folder (leaving `keep`); refuse if it holds anything else."""
    out = Path(out)
    if not (out / MARKER).exists():
        raise PatchlabError(f"{out} was not written by patchlab", "pass a new or empty folder as --out")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in entries | keep | {MARKER})
    if foreign:
        raise PatchlabError(
            f"{out} holds files patchlab did not write: {', '.join(foreign[:5])}",
            "move them elsewhere, or pass a new --out",
        )
    for name in entries:
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
