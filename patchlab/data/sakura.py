"""Datasets in SAKURA's layout: Track/metadata.csv + Track/audio/*, with multiple-choice options parsed."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import PatchlabError

COLUMNS = ("file", "attribute_label", "single_instruction", "single_answer")
_ANSWER = re.compile(r"\s*\(([a-z])\)\s*(.+)", re.S)
_OPTION = re.compile(r"\(([a-z])\)\s*(.+?)(?=\s*\([a-z]\)\s|\s*$)", re.S)


@dataclass(frozen=True)
class Sample:
    """One labelled clip: its path, label, SAKURA question and options, and the index of the right option."""

    id: str
    track: str
    path: Path
    label: str
    question: str
    options: tuple[str, ...]
    answer: int


def parse_options(instruction: str) -> list[str]:
    """'(a) Female (b) Male' -> ['Female', 'Male'] (text after the first '(a)')."""
    start = instruction.find("(a)")
    if start < 0:
        return []
    return [m.group(2).strip().rstrip(".") for m in _OPTION.finditer(instruction[start:])]


def tracks(root: str | Path) -> list[str]:
    """Track directories under `root` (those holding a metadata.csv)."""
    return sorted(p.parent.name for p in Path(root).glob("*/metadata.csv"))


def load_track(root: str | Path, track: str, limit: int | None = None) -> list[Sample]:
    """Read `root/track/metadata.csv`; every row must name an answer that is among its options."""
    root = Path(root)
    meta = root / track / "metadata.csv"
    if not meta.exists():
        known = tracks(root)
        raise PatchlabError(
            f"track {track!r} not found under {root} (no {meta})",
            f"use one of: {', '.join(known)}" if known else f"point --data at a SAKURA-format directory, not {root}",
        )
    with meta.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise PatchlabError(
                f"{meta} lacks columns {missing}", f"SAKURA's metadata has columns {', '.join(COLUMNS)}"
            )
        rows = list(reader)
    out = []
    for n, row in enumerate(rows[:limit] if limit else rows, start=2):
        options = parse_options(row["single_instruction"])
        m = _ANSWER.match(row["single_answer"])
        answer = m.group(2).strip().rstrip(".") if m else row["single_answer"].strip()
        if answer not in options or (m and options.index(answer) != ord(m.group(1)) - ord("a")):
            raise PatchlabError(
                f"{meta} line {n}: answer {row['single_answer']!r} is not among the options {options}",
                "fix the row's single_answer to one of the '(x) option' choices in single_instruction",
            )
        out.append(
            Sample(
                id=Path(row["file"]).stem,
                track=track,
                path=root / track / "audio" / row["file"],
                label=row["attribute_label"],
                question=row["single_instruction"],
                options=tuple(options),
                answer=options.index(answer),
            )
        )
    return out
