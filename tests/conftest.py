"""Shared fixtures: tiny random-weight checkpoints (built once per session), synthetic clips, SAKURA if present."""

from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402

import patchlab  # noqa: E402

SAKURA = Path(__file__).resolve().parents[1].parent / "shared" / "sakura"
FAMILIES = ["qwen2_audio", "voxtral", "audioflamingo3", "qwen2_5_omni", "granite_speech"]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """Path of a tiny random checkpoint for a family, made on first use."""
    made: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in made:
            made[family] = patchlab.make_tiny(family, tmp_path_factory.mktemp(family))
        return made[family]

    return get


@pytest.fixture(scope="session")
def qwen(tiny_dir):
    return patchlab.load(tiny_dir("qwen2_audio"))


@pytest.fixture(scope="session")
def sakura() -> Path:
    if not (SAKURA / "Gender" / "metadata.csv").exists():
        pytest.skip(f"SAKURA dev split not found at {SAKURA} (it lives in ../shared beside the checkout)")
    return SAKURA


def tone(seconds: float, freq: float = 220.0, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A voiced-like synthetic clip: a harmonic tone plus a little noise."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    wave = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, 6)) * 0.2
    return (wave + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> Path:
    """A tiny dataset in SAKURA's layout, synthesized here: 'female' = high tones, 'male' = low tones."""
    root = tmp_path_factory.mktemp("toy")
    audio = root / "Gender" / "audio"
    audio.mkdir(parents=True)
    rows = ["file,attribute_label,single_instruction,single_answer,multi_instruction,multi_answer"]
    for i in range(6):
        label = "female" if i % 2 == 0 else "male"
        sf.write(audio / f"clip{i}.wav", tone(1.0 + 0.1 * i, 240 if label == "female" else 110, seed=i), 16000)
        ans = "(a) Female" if label == "female" else "(b) Male"
        rows.append(f'clip{i}.wav,{label},"What is the speaker\'s gender? (a) Female (b) Male",{ans},x,x')
    (root / "Gender" / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root
