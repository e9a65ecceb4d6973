"""Per-clip journals for the one-shot commands (`lens`, `mini eval`): rows are appended as each clip finishes, so a
killed run keeps them, and the same command run again into the same folder continues where it stopped.

`journal.json` records what decides the rows (the command's arguments, the data's and the weights' fingerprints,
patchlab's code); a rerun whose identity differs is refused, naming what changed, so a resumed run equals an
uninterrupted one. `rows.jsonl` holds one line per finished clip; a line cut short by a kill is not a clip.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import PatchlabError
from .io import write_json
from .outdir import record


class Journal:
    """Clip rows of one command in `out`, kept across kills: `done` holds what earlier runs finished."""

    def __init__(self, out: Path, ident: dict) -> None:
        self.path = out / "rows.jsonl"
        meta = out / "journal.json"
        if meta.exists():
            old = json.loads(meta.read_text())
            changed = [k for k in ident["args"] if old.get("args", {}).get(k) != ident["args"][k]]
            fingerprints = ("data_fingerprint", "model_fingerprint", "code_fingerprint")
            changed += [k for k in fingerprints if old.get(k) != ident[k]]
            if changed:
                raise PatchlabError(
                    f"{out} holds rows of the same command run differently (changed: {', '.join(changed)})",
                    "run with the arguments, data, weights and code it started with to continue, or pass a new --out",
                )
        else:
            record(self.path)  # refused if a rows.jsonl there is not patchlab's; listed in the manifest otherwise
            self.path.unlink(missing_ok=True)
            write_json(meta, ident)
        self.done: dict[str, list[dict]] = {}
        if self.path.exists():
            lines = self.path.read_text().split("\n")
            for line in lines[:-1]:  # the text after the last newline is a line a kill cut short
                entry = json.loads(line)
                self.done[entry["clip"]] = entry["rows"]
            if lines[-1]:
                with self.path.open("w") as f:  # drop the cut line so later appends start on a fresh one
                    f.write("".join(line + "\n" for line in lines[:-1]))

    def add(self, clip: str, rows: list[dict]) -> None:
        """Append one finished clip's rows and make them durable before going on."""
        with self.path.open("a") as f:
            f.write(json.dumps({"clip": clip, "rows": rows}, allow_nan=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.done[clip] = rows
