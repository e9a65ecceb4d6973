"""Synthetic labelled audio in SAKURA's layout, for demos and tests where no real dataset is at hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

HEADER = "file,attribute_label,single_instruction,single_answer,multi_instruction,multi_answer"


def multiple_choice(stem: str, options: list[str], label: str) -> tuple[str, str]:
    """A SAKURA-style question, "stem (a) Female (b) Male", and its answer, "(a) Female" (options capitalized)."""
    shown = [o[:1].upper() + o[1:] for o in options]
    i = options.index(label)
    return f"{stem} " + " ".join(f"({chr(97 + k)}) {o}" for k, o in enumerate(shown)), f"({chr(97 + i)}) {shown[i]}"


def tone(seconds: float, freq: float = 220.0, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A voiced-like clip: a harmonic tone at `freq` plus a little noise (seeded)."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    wave = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, 6)) * 0.2
    return (wave + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)


def tone_gender_track(root: str | Path, n: int = 8) -> Path:
    """A Gender track of harmonic tones: 'female' clips at 240 Hz, 'male' at 110 Hz, lengths 1.0 s upwards."""
    root = Path(root)
    audio = root / "Gender" / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    rows = [HEADER]
    for i in range(n):
        label = "female" if i % 2 == 0 else "male"
        sf.write(audio / f"tone{i}.wav", tone(1.0 + 0.1 * i, 240 if label == "female" else 110, seed=i), 16000)
        answer = "(a) Female" if label == "female" else "(b) Male"
        rows.append(f'tone{i}.wav,{label},"What is the speaker\'s gender? (a) Female (b) Male",{answer},-,-')
    (root / "Gender" / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root
