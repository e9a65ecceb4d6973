"""The seed's own models through their real code (../shared/lalm-code): Qwen-Audio's remote code and the DeSTA2
package, on tiny random-weight checkpoints built from that code. Each wrapper equals the model's own forward, its
audio region is where the model writes audio, DeSTA2's transcript region is where the package put the transcription,
Qwen-Audio's loaded tensors are the saved ones, and the commands run on SAKURA."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import patchlab
from patchlab.check import run_checks
from patchlab.cli import main
from patchlab.errors import PatchlabError
from patchlab.models.base import Prompt
from patchlab.models.remote import disk_tensors

CODE = Path(__file__).resolve().parents[1].parent / "shared" / "lalm-code"
PROMPT = Prompt("What is the speaker's gender?", "The speaker's gender is")


def _clip(seconds: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(16000 * seconds)) * 0.1).astype(np.float32)


@pytest.fixture(scope="module")
def code_dir(monkeypatch_module) -> Path:
    if not (CODE / "qwen-audio" / "modeling_qwen.py").exists():
        pytest.skip(f"the seed models' code is not at {CODE} (it lives in ../shared/lalm-code beside the checkout)")
    monkeypatch_module.setenv("PATCHLAB_LALM_CODE", str(CODE))
    # the user installs `desta` (pip install -e DeSTA2); here it is imported from the fixture folder
    monkeypatch_module.syspath_prepend(str(CODE / "desta2"))
    pytest.importorskip("tiktoken", reason="Qwen-Audio's tokenizer needs tiktoken (pip install -e '.[lalm]')")
    pytest.importorskip("librosa", reason="the desta package imports librosa (pip install -e '.[lalm]')")
    return CODE


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()
    sys.modules.pop("desta", None)
    sys.modules.pop("desta.modeling_desta", None)


@pytest.fixture(scope="module")
def tiny(code_dir, tiny_dir):
    """conftest's tiny checkpoints, built here with the seed models' code in reach."""
    return tiny_dir


@pytest.fixture(scope="module")
def qa(tiny):
    return patchlab.load(tiny("qwen_audio"), trust_remote_code=True)


@pytest.fixture(scope="module")
def ds(tiny):
    return patchlab.load(tiny("desta2"), trust_remote_code=True)


def test_remote_code_needs_consent(tiny):
    for family in ("qwen_audio", "desta2"):
        with pytest.raises(PatchlabError, match="trust_remote_code=True") as e:
            patchlab.load(tiny(family))
        assert "--trust-remote-code" in e.value.fix


@pytest.mark.parametrize("seconds", [1.0, 2.3])
def test_qwen_audio_equals_its_own_forward(qa, seconds):
    batch = qa.prepare(_clip(seconds), 16000, PROMPT)
    t = batch.tensors
    own = qa.model.own_forward(t["input_ids"], t["input_audios"], t["input_audio_lengths"])  # audio_info dict path
    assert (qa.forward(batch) - own).abs().max() <= 1e-5
    # the audio region: start token through end token, as many positions as the code's audio_span_tokens
    spans = int(t["input_audio_lengths"][0, 1]) + 2
    r = batch.regions[0]
    assert len(r.audio) == spans and r.audio == tuple(range(r.audio[0], r.audio[0] + spans))
    ids = t["input_ids"][0]
    assert ids[r.audio[0]] == qa.tokenizer.audio_start_id and ids[r.audio[-1]] == qa.tokenizer.audio_end_id
    assert not set(r.audio) & (set(r.text) | set(r.special))


def test_qwen_audio_prompt_is_chat_make_context(qa):
    """The token ids are those QWenLMHeadModel.chat builds with its own make_context (here for the question turn)."""
    batch = qa.prepare(_clip(1.0), 16000, Prompt("What is the speaker's gender?"))
    text = qa.tokenizer.decode(batch.tensors["input_ids"][0].tolist(), audio_info={"audio_urls": ["clip"]})
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nAudio 1:<audio>clip</audio>\n"
        "What is the speaker's gender?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_qwen_audio_loads_exactly_the_saved_tensors(qa, tiny, tmp_path):
    from patchlab.models.qwen_audio import CODE_FILES, code

    src = tiny("qwen_audio")
    qa.model.qwen.save_pretrained(tmp_path)
    for f in CODE_FILES:
        shutil.copyfile(src / f, tmp_path / f)
    (tmp_path / "config.json").write_text((src / "config.json").read_text())
    saved = disk_tensors(tmp_path)
    loaded = patchlab.load(tmp_path, trust_remote_code=True).model.qwen.state_dict()
    assert set(loaded) == set(saved)
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    # the unguarded path re-runs the code's _init_weights over c_proj.weight after loading: the guard is needed
    mods = code(tmp_path)
    config = mods.configuration.QWenConfig.from_pretrained(str(tmp_path))
    plain = mods.modeling.QWenLMHeadModel.from_pretrained(str(tmp_path), config=config).state_dict()
    changed = sorted(k for k in saved if not torch.equal(plain[k], saved[k]))
    assert changed and all(k.endswith("c_proj.weight") for k in changed)


def test_load_exactly_refuses_what_it_cannot_restore(qa, tiny, tmp_path):
    from patchlab.models.remote import load_exactly

    src = tiny("qwen_audio")
    shutil.copytree(src, tmp_path / "ckpt")
    from safetensors.torch import save_file

    tensors = disk_tensors(src)
    name = next(iter(tensors))
    save_file({k: v for k, v in tensors.items() if k != name}, str(tmp_path / "ckpt" / "model.safetensors"))
    with pytest.raises(PatchlabError, match="not in the checkpoint files"):
        load_exactly(qa.model.qwen, tmp_path / "ckpt", "ckpt")


@pytest.mark.parametrize("seconds", [1.0, 2.3])
def test_desta2_equals_the_package_forward(ds, seconds):
    audio = _clip(seconds, seed=int(seconds * 10))
    batch = ds.prepare(audio, 16000, PROMPT)
    assert (ds.forward(batch) - ds.model.own_forward(audio, PROMPT)).abs().max() <= 1e-5
    r = batch.regions[0]
    assert len(r.audio) == 64 and r.audio == tuple(range(r.audio[0], r.audio[0] + 64))


def test_desta2_transcript_is_where_the_package_put_it(ds):
    d = ds.model.desta
    audio = _clip(1.0)
    batch = ds.prepare(audio, 16000, PROMPT)
    r = batch.regions[0]
    feats = d.speech_perception.processor(audio, sampling_rate=16000, return_tensors="pt").input_features
    transcription, speech = d.speech_perception.generate(feats)
    ids = batch.tensors["input_ids"][0]
    assert r.transcript, "the transcript region is empty"
    assert ds.tokenizer.decode(ids[list(r.transcript)]).strip() == transcription.strip()
    assert r.transcript[0] > r.audio[-1] and not set(r.transcript) & (set(r.text) | set(r.special) | set(r.audio))
    # the package's own input embeddings hold those tokens at exactly those positions
    from patchlab.models.desta2 import AUDIO_MARK, messages

    inputs, position = d.process_text(messages(PROMPT), AUDIO_MARK, transcription)
    own, _ = d.prepare_llm_input(inputs.input_ids, inputs.attention_mask, position, speech)
    table = d.llama.model.embed_tokens(ids[list(r.transcript)])
    assert torch.equal(own[0, list(r.transcript)], table)


def test_desta2_swap_keeps_positions_aligned(ds):
    """A corrupted run's transcription is fitted to the clean run's token count, so the regions line up."""
    clean = ds.prepare(_clip(1.0), 16000, PROMPT)
    n = len(clean.regions[0].transcript)
    from patchlab.regions import Regions

    shorter = Regions(clean.regions[0].length, clean.regions[0].audio, (), (), clean.regions[0].transcript[: n - 3])
    fitted = ds.prepare(_clip(1.0, seed=5), 16000, PROMPT, like=type(clean)({}, [shorter]))
    assert len(fitted.regions[0].transcript) == n - 3


@pytest.mark.parametrize("family", ["qwen_audio", "desta2"])
def test_wrapper_invariants(family, qa, ds):
    """`patchlab check`: hooked forward, audio region, lens = logits, batched and skipped patching = full forwards,
    restoration of all positions, a resid_pre sweep = a plain per-cell loop, finite activations."""
    lalm = qa if family == "qwen_audio" else ds
    failed = [(c.name, c.measured) for c in run_checks(lalm) if not c.passed]
    assert not failed


@pytest.mark.parametrize("family", ["qwen_audio", "desta2"])
def test_commands_on_sakura(family, tiny, sakura, tmp_path, capsys):
    model = str(tiny(family))
    common = ["--model", model, "--trust-remote-code", "--data", str(sakura), "--track", "Gender", "--limit", "2"]
    assert main(["lens", *common, "--prompt", "mc", "--out", str(tmp_path / "lens")]) == 0
    assert main(["patch", *common, "--prompt", "mc", "--out", str(tmp_path / "patch")]) == 0
    import pandas as pd

    assert pd.read_csv(tmp_path / "lens" / "tables" / "lens_per_sample.csv")["sample"].nunique() == 2

    table = pd.read_csv(tmp_path / "patch" / "patching.csv")
    regions = set(table["position"])
    assert {"audio", "text", "final"} <= regions and (("transcript" in regions) == (family == "desta2"))
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"name: tiny_{family}\nmodel: {model}\ndata: {sakura}\ntracks: [Gender]\n"
        "analyses: [lens, patch, ground, knockout]\nformats: [mc]\nlimit: 2\nshard_size: 2\ntrust_remote_code: true\n"
        "ground: {n_boot: 50}\n"
    )
    assert main(["run", str(config), "--out", str(tmp_path / "run")]) == 0
    grounding = pd.read_csv(tmp_path / "run" / "tables" / "grounding_Gender.csv")
    assert ("delta_transcript" in grounding) == (family == "desta2")
    assert np.isfinite(grounding["delta_audio"]).all()


@pytest.mark.parametrize("family", ["qwen_audio", "desta2"])
def test_check_command(family, tiny, capsys):
    assert main(["check", str(tiny(family)), "--trust-remote-code"]) == 0
    out = capsys.readouterr().out
    assert "9 passed, 0 failed" in out and "RANDOM WEIGHTS" in out


def test_models_lists_the_seed_families(capsys):
    main(["models"])
    out = capsys.readouterr().out
    assert "qwen_audio" in out and "desta2" in out


def test_make_tiny_without_the_code_names_the_flag_and_leaves_nothing(tmp_path):
    with pytest.raises(PatchlabError, match="no qwen-audio model code") as e:
        patchlab.make_tiny("qwen_audio", tmp_path / "tiny", code_dir=tmp_path / "absent")
    assert "--code" in e.value.fix and not (tmp_path / "tiny").exists()
