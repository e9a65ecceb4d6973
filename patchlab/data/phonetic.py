"""The phonetic track, Letter: which letter a human speaker names, from KDE KLettres' recordings of the alphabet
(Debian `klettres-data`, one speaker per language). Letter names differ by one phoneme (the English E-set
B C D E G P T V Z), so the track asks what was said, where SAKURA asks who or what is speaking.

The test split is every recording of the held-out languages' speakers (`TEST_LANGUAGES`); no training set reads
their folders, nor the KTuberling folders of the same languages (maybe the same people). `leakage` checks it by
content: every training clip lists the digests of the recordings it was made from.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import soundfile as sf

from ..errors import PatchlabError
from ..io import write_atomic
from .audio import load_audio
from .synth import HEADER, multiple_choice

TRACK = "Letter"
KLETTRES = Path("/usr/share/klettres")
KTUBERLING = Path("/usr/share/ktuberling/sounds")
TEST_LANGUAGES = ("en", "en_GB", "de", "es", "fr", "it", "nl", "pt_BR")  # 8 speakers, 203 letters
KTUBERLING_OF = {"en": "en", "en_GB": "en", "de": "de", "es": "es", "fr": "fr", "it": "it", "nl": "nl", "pt_BR": "pt"}
CONFUSABLE = ("bcdegptvz", "ahjk", "flmnsx", "iry", "quwo")  # letters whose English names rhyme: distractors first
QUESTIONS = [
    "Which letter does the speaker say?",
    "Identify the letter named in this recording.",
    "Listen to the speaker and select the letter they say.",
]
WRITE = "Write the letter you hear."  # the transcription prompt (question 4)


@dataclass(frozen=True)
class Recording:
    language: str
    letter: str
    path: Path


def digest(path: Path) -> str:
    """sha1 of a recording file's bytes: how training sets and the test split name their sources."""
    return hashlib.sha1(path.read_bytes()).hexdigest()


def held_out() -> tuple[Path, ...]:
    """Folders of the test split's speakers: their KLettres language folders and KTuberling's of the same languages."""
    folders = [KLETTRES / lang for lang in TEST_LANGUAGES]
    return tuple(dict.fromkeys(folders + [KTUBERLING / KTUBERLING_OF[lang] for lang in TEST_LANGUAGES]))


def is_held_out(path: Path) -> bool:
    """Whether a recording lies in a test speaker's folder (such recordings never enter a training set)."""
    return any(Path(path).is_relative_to(folder) for folder in held_out())


def letter_recordings(languages: tuple[str, ...] | None = None) -> list[Recording]:
    """KLettres' recordings of the 26 Latin letters, per language (its sounds.xml names each file's letter)."""
    if not KLETTRES.exists():
        raise PatchlabError(f"{KLETTRES} not found", "install the Debian package: apt-get install klettres-data")
    out = []
    for xml in sorted(KLETTRES.glob("*/sounds.xml")):
        for lang in ElementTree.parse(xml).getroot().iter("language"):
            code, alphabet = lang.get("code"), lang.find("alphabet")
            if alphabet is None or (languages is not None and code not in languages):
                continue
            for sound in alphabet.iter("sound"):
                name, path = sound.get("name", "").lower(), KLETTRES / sound.get("file", "")
                if re.fullmatch("[a-z]", name) and path.is_file():
                    out.append(Recording(code, name, path))
    return out


def training_languages() -> tuple[str, ...]:
    """KLettres languages with Latin letters that are not held out: their speakers may train a model."""
    return tuple(sorted({r.language for r in letter_recordings()} - set(TEST_LANGUAGES)))


def letter_question(letter: str, rng: np.random.Generator) -> tuple[str, str]:
    """A SAKURA-style question with 4 shuffled options (letters whose names rhyme with the answer first) and its
    '(x) B' answer."""
    group = next((g for g in CONFUSABLE if letter in g), "")
    near = [x for x in group if x != letter]
    far = [x for x in "abcdefghijklmnopqrstuvwxyz" if x not in group]
    foils = list(rng.permutation(near))[:3]
    foils += list(rng.choice(far, size=3 - len(foils), replace=False))
    options = [letter, *foils]
    rng.shuffle(options)
    return multiple_choice(str(rng.choice(QUESTIONS)), options, letter)


def build_letter_track(out: str | Path, seed: int = 0, languages: tuple[str, ...] = TEST_LANGUAGES) -> Path:
    """Write the Letter track of the held-out speakers in SAKURA's layout: out/Letter/audio/<language>-<letter>.flac
    (16 kHz mono, the recording as is), metadata.csv and SOURCES.tsv (each clip's recording and its digest)."""
    out = Path(out)
    recordings = letter_recordings(languages)
    if not recordings:
        raise PatchlabError(f"no KLettres letters for {languages}", f"choose among {training_languages()}")
    rng = np.random.default_rng(seed)
    audio = out / TRACK / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    rows, sources = [HEADER.split(",")], ["file\tlanguage\tletter\trecording\tsha1"]
    for r in recordings:
        name = f"{r.language}-{r.letter}.flac"
        with warnings.catch_warnings():  # a few are stereo: their mean is the clip, as for any SAKURA clip
            warnings.simplefilter("ignore")
            wave = load_audio(r.path)
        sf.write(audio / name, wave, 16000)
        q, a = letter_question(r.letter, rng)
        rows.append([name, r.letter, q, a, "-", "-"])
        sources.append(f"{name}\t{r.language}\t{r.letter}\t{r.path}\t{digest(r.path)}")
    text = io.StringIO()
    csv.writer(text).writerows(rows)
    write_atomic(out / TRACK / "metadata.csv", text.getvalue())
    write_atomic(out / TRACK / "SOURCES.tsv", "\n".join(sources) + "\n")
    return out


def source_digests(text: str) -> set[str]:
    """The recording digests a training set's SOURCES.tsv text names (each clip's `sha1:` list)."""
    return {d for group in re.findall(r"sha1:([0-9a-f,]+)", text) for d in group.split(",")}


def _read(path: Path, fix: str) -> str:
    """A SOURCES.tsv's text; a missing or unreadable (not UTF-8 text) file is refused with its fix."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PatchlabError(f"{path} not found or not readable as text ({e.__class__.__name__})", fix) from e


def leakage(train: str | Path, test: str | Path) -> dict:
    """How many test recordings a training set was made from (by content digest), and how many of its human clips
    name a held-out folder. A training set whose human clips list no digests (built before digests were recorded),
    or a test split whose rows lack theirs, is refused: nothing could be checked."""
    train_sources, test_sources = Path(train) / "SOURCES.tsv", Path(test) / TRACK / "SOURCES.tsv"
    text = _read(train_sources, "rebuild it with `patchlab mini data`")
    test_rows = [line.split("\t") for line in _read(test_sources, "build it: `patchlab mini phonetic`").splitlines()]
    lines = text.splitlines()
    human = [line for line in lines if "\thuman " in line or "\tklettres " in line]
    digests = source_digests(text)
    if not digests or any("sha1:" not in line for line in human):
        raise PatchlabError(
            f"{train_sources} lists no recording digests for its human clips: nothing could be checked",
            "rebuild it with `patchlab mini data`",
        )
    test_digests = {row[-1] for row in test_rows[1:]}
    if not test_rows[1:] or not all(re.fullmatch(r"[0-9a-f]{40}", d) for d in test_digests):
        raise PatchlabError(
            f"{test_sources} does not give a sha1 digest for each test recording",
            "build it again: `patchlab mini phonetic`",
        )
    shared = test_digests & digests
    folders = [str(f) for f in held_out()]
    named = [line for line in human if any(f" {folder}/" in line or f" {folder} " in line for folder in folders)]
    return dict(
        training_clips=len(lines),
        human_training_clips=len(human),
        test_recordings=len(test_digests),
        shared_recordings=len(shared),
        clips_from_held_out_folders=len(named),
    )
