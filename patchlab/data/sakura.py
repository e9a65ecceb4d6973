"""Datasets in SAKURA's layout: Track/metadata.csv + Track/audio/*, with multiple-choice options parsed."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

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
    root: Path | None = None  # the dataset folder (where the track's full label list is read from)


def draw_key(clip: str) -> str:
    """What a clip's seeded draws (swap donors, cue wording, the screened share) are keyed by: its file name without
    folder and extension, as the clip's id was before ids became paths, so earlier runs' draws are unchanged."""
    return PurePosixPath(clip).stem


def parse_options(instruction: str) -> list[str]:
    """'(a) Female (b) Male' -> ['Female', 'Male'] (text after the first '(a)')."""
    start = instruction.find("(a)")
    if start < 0:
        return []
    return [m.group(2).strip().rstrip(".") for m in _OPTION.finditer(instruction[start:])]


def tracks(root: str | Path) -> list[str]:
    """Track directories under `root` (those holding a metadata.csv)."""
    return sorted(p.parent.name for p in Path(root).glob("*/metadata.csv"))


def part_of(numbered: list[tuple[int, dict]], part: tuple[int, int], seed: int) -> list[tuple[int, dict]]:
    """The i-th of k disjoint parts (part = (i, k)) of numbered rows: each label's rows in a seeded order, dealt out
    in turn, so every part keeps the track's label mix and no clip is in two parts."""
    i, k = part
    by_label: dict[str, list[tuple[int, dict]]] = {}
    for item in numbered:
        by_label.setdefault(item[1]["attribute_label"], []).append(item)
    rng = np.random.default_rng([seed, k])
    mine = []
    for label in sorted(by_label):
        items = by_label[label]
        mine += [items[j] for j in rng.permutation(len(items))[i::k]]
    return sorted(mine, key=lambda item: item[0])


def stratified(
    rows: list[dict], limit: int | None, seed: int = 0, part: tuple[int, int] | None = None
) -> list[tuple[int, dict]]:
    """(line number, row) of `limit` rows drawn at random (seeded) within each label, in the track's label mix
    (`part`: from the i-th of k disjoint parts only).

    Each label gets its share of `limit` (largest remainder, at least one clip per label while `limit` allows), so a
    limited run neither follows file order (SAKURA files are sorted by label) nor changes the label mix.
    """
    numbered = list(enumerate(rows, start=2))
    if part:
        numbered = part_of(numbered, part, seed)
    if not limit or limit >= len(numbered):
        return numbered
    by_label: dict[str, list[tuple[int, dict]]] = {}
    for item in numbered:
        by_label.setdefault(item[1]["attribute_label"], []).append(item)
    labels = sorted(by_label)
    exact = np.array([len(by_label[la]) for la in labels]) * limit / len(numbered)
    take = np.floor(exact).astype(int)
    if limit >= len(labels):
        take = np.maximum(take, 1)
    for i in np.argsort(-(exact - np.floor(exact)), kind="stable"):
        if take.sum() >= limit:
            break
        take[i] += 1
    while take.sum() > limit:  # the at-least-one rule overshot: trim the largest shares
        take[int(np.argmax(take))] -= 1
    rng = np.random.default_rng(seed)
    picked = []
    for la, k in zip(labels, take):
        items = by_label[la]
        picked += [items[i] for i in rng.permutation(len(items))[:k]]
    return sorted(picked, key=lambda item: item[0])


def load_track(
    root: str | Path, track: str, limit: int | None = None, seed: int = 0, part: tuple[int, int] | None = None
) -> list[Sample]:
    """Read `root/track/metadata.csv` (`limit`: a seeded stratified sample; `part`: of the i-th of k disjoint
    parts); answers must be options."""
    root = Path(root)
    meta = root / track / "metadata.csv"
    if not meta.exists():
        known = tracks(root)
        raise PatchlabError(
            f"track {track!r} not found under {root} (no {meta})",
            (f"use one of its tracks ({', '.join(known)}), or " if known else "")
            + f"give the folder holding {track}/metadata.csv as --data (in a config: `data`, or `track_data` for it)",
        )
    rows = _read_rows(meta)
    out = []
    audio_dir = root / track / "audio"
    top = root.resolve()
    for n, row in stratified(rows, limit, seed, part):
        options = parse_options(row["single_instruction"])
        m = _ANSWER.match(row["single_answer"])
        answer = m.group(2).strip().rstrip(".") if m else row["single_answer"].strip()
        if answer not in options or (m and options.index(answer) != ord(m.group(1)) - ord("a")):
            raise PatchlabError(
                f"{meta} line {n}: answer {row['single_answer']!r} is not among the options {options}",
                "fix the row's single_answer to one of the '(x) option' choices in single_instruction",
            )
        if row["attribute_label"].strip().casefold() != answer.casefold():
            raise PatchlabError(
                f"{meta} line {n}: attribute_label {row['attribute_label']!r} is not the right option {answer!r} "
                f"(options {options})",
                "the label must name the right answer (letter case aside): fix attribute_label or single_answer",
            )
        path = root / track / "audio" / row["file"]
        if not path.resolve().is_relative_to(top):
            raise PatchlabError(
                f"{meta} line {n}: file {row['file']!r} points outside the dataset folder {root} (to {path.resolve()})",
                f"give files as paths inside {audio_dir} (no '..', no absolute paths, no links that lead out)",
            )
        out.append(
            Sample(
                id=row["file"],  # the clip's identity: its path within the track, exactly as metadata.csv gives it
                track=track,
                path=path,
                label=row["attribute_label"],
                question=row["single_instruction"],
                options=tuple(options),
                answer=options.index(answer),
                root=root,
            )
        )
    return out


def _read_rows(meta: Path) -> list[dict]:
    """metadata.csv's rows, refused (naming the lines) where a row lacks or adds fields, two rows name one audio
    file, or two labels differ only in letter case: each would silently merge or drop clips."""
    try:
        with meta.open(newline="", encoding="utf-8-sig") as f:  # -sig: a UTF-8 BOM (Excel's CSVs) is not a column
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise PatchlabError(
                    f"{meta} lacks columns {missing}", f"SAKURA's metadata has columns {', '.join(COLUMNS)}"
                )
            rows = list(reader)
    except UnicodeDecodeError as e:
        raise PatchlabError(
            f"{meta} is not UTF-8 text (byte {e.start}: {e.reason})",
            "re-save it as UTF-8 (e.g. `iconv -f cp1252 -t utf-8 metadata.csv > fixed.csv`)",
        ) from None
    except csv.Error as e:
        raise PatchlabError(f"{meta} is not a valid CSV file ({e})", "re-save it as comma-separated UTF-8") from None
    seen: dict[str, int] = {}
    cases: dict[str, tuple[str, int]] = {}
    for n, row in enumerate(rows, start=2):
        if None in row or any(v is None for v in row.values()):
            raise PatchlabError(
                f"{meta} line {n} has {'more' if None in row else 'fewer'} fields than its header "
                f"({len(reader.fieldnames)})",
                "quote fields that hold commas and give every column a value",
            )
        if not row["file"].strip():
            raise PatchlabError(f"{meta} line {n} names no audio file", "give the clip's file name in `file`")
        key = str(Path(row["file"]).as_posix()).removeprefix("./")
        if key in seen:
            raise PatchlabError(
                f"{meta} lines {seen[key]} and {n} name the same audio file {row['file']!r}",
                "keep one row per clip (remove the duplicate)",
            )
        seen[key] = n
        label = row["attribute_label"]
        first = cases.setdefault(label.strip().casefold(), (label, n))
        if first[0] != label:
            raise PatchlabError(
                f"{meta} lines {first[1]} and {n} spell one label two ways ({first[0]!r}, {label!r})",
                "write each label the same way on every row",
            )
    return rows


def track_labels(root: str | Path, track: str) -> list[str]:
    """Every label of a track (sorted), from its whole metadata.csv: what label sets are built from."""
    return sorted({s.label for s in load_track(root, track)})


def labels_of(samples: list[Sample]) -> list[str]:
    """The full label lists of the tracks these samples come from (not only the labels the samples have)."""
    found: set[str] = set()
    for root, track in sorted({(str(s.root), s.track) for s in samples if s.root is not None}):
        found.update(track_labels(root, track))
    found.update(s.label for s in samples if s.root is None)
    return sorted(found)


def fingerprint(root: str | Path, track: str) -> str:
    """Hash of a track's contents: its metadata.csv and the bytes of every audio file it names."""
    import hashlib

    root = Path(root)
    h = hashlib.sha256((root / track / "metadata.csv").read_bytes())
    for s in load_track(root, track):
        h.update(s.path.name.encode())
        h.update(hashlib.sha256(s.path.read_bytes()).digest() if s.path.is_file() else b"missing")
    return h.hexdigest()[:16]
