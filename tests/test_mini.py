"""patchlab-mini: the model class and processor (tiny random and real parts), conversion, training, evaluation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import needs_parts

import patchlab
from patchlab.data import load_track
from patchlab.errors import PatchlabError
from patchlab.models.base import Prompt


@pytest.fixture(scope="session")
def tiny_mini(tiny_dir):
    return patchlab.load(tiny_dir("patchlab_mini"))


def test_tiny_mini_regions_match_scattered_audio(tiny_mini, toy_data):
    """The audio region is exactly where the model scatters projected audio, and the hooked forward is plain."""
    s = load_track(toy_data, "Gender")[3]
    wave = patchlab.data.load_audio(s.path, 16000)
    batch = tiny_mini.prepare(wave, 16000, Prompt("Gender?"))
    ids = batch.tensors["input_ids"][0]
    scattered = (ids == tiny_mini.model.config.audio_token_id).nonzero().flatten().tolist()
    assert list(batch.regions[0].audio) == scattered
    # 1.3 s of audio: 130 mel frames -> 65 encoder frames -> 16 stacked tokens, then the language-ID token
    assert len(scattered) == ((len(wave) // 160 - 1) // 2 + 1) // 4 + 1
    assert tiny_mini.is_random
    logits = tiny_mini.forward(batch)
    with torch.no_grad():
        plain = tiny_mini.model(**batch.tensors).logits
    assert torch.equal(logits, plain)


def test_tiny_mini_language_token_is_the_verbalized_language_id(tiny_mini, toy_data):
    """The last audio position holds the verbalizer's mix of language rows, weighted by Whisper's language ID."""
    wave = patchlab.data.load_audio(load_track(toy_data, "Gender")[0].path, 16000)
    batch = tiny_mini.prepare(wave, 16000, Prompt("Language?"))
    inner = tiny_mini.model.model
    with torch.no_grad():
        feats = batch.tensors["input_features"], batch.tensors["feature_attention_mask"]
        (clip,) = inner.encode_audio(*feats)
        embeds = inner.embed(batch.tensors["input_ids"], [clip])
    assert clip.language.shape == (3,) and abs(float(clip.language.sum()) - 1) < 1e-6
    last_audio = batch.regions[0].audio[-1]
    expected = clip.language @ inner.language_id.verbalizer.weight.T
    torch.testing.assert_close(embeds[0, last_audio], expected)
    without = type(clip)(clip.stacked, None)  # audio encoded without its language-ID token: one placeholder spare
    with pytest.raises(ValueError, match="audio placeholders"):
        inner.embed(batch.tensors["input_ids"], [without])


def test_tiny_mini_saves_and_loads(tiny_mini, tmp_path):
    tiny_mini.model.save_pretrained(tmp_path)
    tiny_mini.processor.save_pretrained(tmp_path)
    again = patchlab.load(tmp_path)
    for (k, a), b in zip(tiny_mini.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), k


def test_mini_refuses_clip_longer_than_window(tiny_mini):
    with pytest.raises(PatchlabError, match="longer than patchlab_mini's 30 s window"):
        tiny_mini.prepare(np.zeros(16000 * 31, dtype=np.float32), 16000, Prompt("?"))


@needs_parts
def test_converted_whisper_matches_ctranslate2(sakura, tmp_path):
    """Our transformers Whisper vs CTranslate2 running the original file: the encoder output within relative
    difference 1e-3, and the decoder's language-ID distribution (the language token's input) within 1e-4."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    from transformers import WhisperFeatureExtractor

    from patchlab.mini.build import assemble
    from patchlab.mini.parts import whisper_ct2_bytes, whisper_ct2_dir, whisper_language_table

    (tmp_path / "model.bin").write_bytes(whisper_ct2_bytes())
    for f in ("config.json", "vocabulary.txt", "tokenizer.json"):
        shutil.copy(whisper_ct2_dir() / f, tmp_path / f)
    ct = ctranslate2.models.Whisper(str(tmp_path), device="cpu", compute_type="float32")
    model, processor = assemble(random_projector=True)
    fe: WhisperFeatureExtractor = processor.feature_extractor
    codes = [lang["code"] for lang in whisper_language_table()["languages"]]
    for sample in load_track(sakura, "Language")[:2]:
        wave = patchlab.data.load_audio(sample.path, 16000)
        feats = fe(wave, sampling_rate=16000, return_tensors="np").input_features.astype(np.float32)
        theirs = np.array(ct.encode(ctranslate2.StorageView.from_array(feats)))
        with torch.no_grad():
            ours = model.model.audio_tower(torch.from_numpy(feats)).last_hidden_state
            language = model.model.language_id.probabilities(ours)[0].numpy()
        assert np.linalg.norm(ours.numpy() - theirs) / np.linalg.norm(theirs) <= 1e-3
        detected = dict(ct.detect_language(ctranslate2.StorageView.from_array(feats))[0])
        their_language = np.array([detected.get(f"<|{c}|>", 0.0) for c in codes])
        assert np.abs(language - their_language).max() <= 1e-4


@needs_parts
def test_training_drops_clips_whose_language_whisper_does_not_pick():
    """Language-labelled clips are kept only where Whisper's language ID, among the labelled languages, agrees."""
    from patchlab.data.sakura import Sample
    from patchlab.mini.modeling import EncodedAudio
    from patchlab.mini.parts import whisper_language_table
    from patchlab.mini.train import recognized_languages

    names = [lang["name"] for lang in whisper_language_table()["languages"]]

    def clip(name: str, label: str, track: str) -> Sample:
        return Sample(name, track, Path(name), label, "?", (label,), 0)

    def sure_of(lang: str) -> EncodedAudio:
        p = torch.full((len(names),), 0.1 / (len(names) - 1))
        p[names.index(lang)] = 0.9
        return EncodedAudio(torch.zeros(1, 4), p)

    samples = [clip("a", "Chinese", "Language"), clip("b", "French", "Language"), clip("c", "female", "Gender")]
    encoded = {"a": sure_of("french"), "b": sure_of("french"), "c": sure_of("english")}
    assert [s.id for s in recognized_languages(samples, encoded)] == ["b", "c"]


@needs_parts
def test_smollm2_answers_a_text_question():
    from transformers import AutoTokenizer, LlamaForCausalLM

    from patchlab.mini.parts import convert_parts

    parts = convert_parts(progress=False)
    tok = AutoTokenizer.from_pretrained(parts / "smollm2")
    lm = LlamaForCausalLM.from_pretrained(parts / "smollm2")
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = lm.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1] :])


def test_built_checkpoint_is_rebuilt_when_the_projector_changes(tmp_path, monkeypatch):
    """A cached checkpoint is reused only while its stamp matches the projector file and checkpoint format it would
    be built from."""
    from patchlab.mini import build as mini_build

    monkeypatch.setenv("PATCHLAB_CACHE", str(tmp_path))  # a build in patchlab's own cache, from before stamps
    out, projector = tmp_path / mini_build.NAME, tmp_path / "projector.safetensors"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"weights")
    projector.write_bytes(b"projector A")
    calls = []
    monkeypatch.setattr(mini_build, "assemble", lambda p: calls.append(p) or (_Saver(), _Saver()))
    assert mini_build.build(out, projector) == out and calls == [projector]  # no stamp yet: built
    assert mini_build.build(out, projector) == out and len(calls) == 1  # same projector: reused
    projector.write_bytes(b"projector B")
    mini_build.build(out, projector)
    assert len(calls) == 2
    assert (out / "projector.sha256").read_text().startswith(mini_build.hashlib.sha256(b"projector B").hexdigest())
    monkeypatch.setattr(mini_build, "FORMAT", mini_build.FORMAT + 1)
    mini_build.build(out, projector)
    assert len(calls) == 3  # same projector, newer layout: rebuilt


def test_build_replaces_only_a_folder_holding_nothing_but_a_build(tmp_path, monkeypatch):
    """`patchlab mini build --out`: the cache root, a folder of the user's inside the cache, and a stamped build the
    user added files to are refused and left as they were; a stamped build holding only build files is replaced."""
    from patchlab.mini import build as mini_build

    monkeypatch.setenv("PATCHLAB_CACHE", str(tmp_path))
    monkeypatch.setattr(mini_build, "assemble", lambda p: (_Saver(), _Saver()))
    projector = tmp_path / "projector.safetensors"
    projector.write_bytes(b"projector A")
    mine = tmp_path / "my-notes"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    for out in (tmp_path, mine):
        with pytest.raises(PatchlabError, match="not a patchlab-mini build"):
            mini_build.build(out, projector)
    assert (mine / "notes.txt").read_text() == "mine" and projector.exists()
    built = mini_build.build(tmp_path / "elsewhere", projector)
    (built / "notes.txt").write_text("mine")
    projector.write_bytes(b"projector B")
    with pytest.raises(PatchlabError, match=r"also holds files a build does not write \(notes.txt\)"):
        mini_build.build(built, projector)
    assert (built / "notes.txt").read_text() == "mine" and not list(tmp_path.glob("elsewhere.tmp*"))
    (built / "notes.txt").unlink()
    mini_build.build(built, projector)
    assert (built / "projector.sha256").read_text().startswith(mini_build.hashlib.sha256(b"projector B").hexdigest())


class _Saver:
    def save_pretrained(self, path):
        path.mkdir(parents=True, exist_ok=True)
        (path / "model.safetensors").write_bytes(b"weights")


@needs_parts
def test_short_training_lowers_the_loss(sakura, tmp_path):
    """Three full-batch steps on a few clips lower the answer loss (SAKURA clips stand in for training audio here;
    measured: 4.72, 3.38, 2.67)."""
    from patchlab.mini.train import train

    log = train(sakura, tmp_path, steps=3, batch_size=12, lr=3e-3, seed=0, limit=1)
    assert log["examples"] == 4 * 3  # 1 clip x 4 tracks x 3 formats: every step sees all of them
    assert log["losses"][2] < log["losses"][1] < log["losses"][0] - 0.5
    assert (tmp_path / "projector.safetensors").exists()


def test_training_starts_from_a_trained_connector_only_if_it_fits(tmp_path):
    """`mini train --init` loads trained weights exactly, and refuses a file that is not this connector's weights
    (other tensors, other shapes, not safetensors), naming it, before any clip is encoded."""
    from safetensors.torch import save_file

    from patchlab.mini.train import load_connector, recipes

    recipe = recipes()["patchlab-mini"]
    trained, fresh = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    save_file(trained.state_dict(), tmp_path / "ok.safetensors")
    load_connector(fresh, tmp_path / "ok.safetensors", recipe)
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), fresh.state_dict().values()))
    save_file(torch.nn.Linear(4, 5).state_dict(), tmp_path / "shape.safetensors")
    save_file({"other.weight": torch.zeros(3, 4)}, tmp_path / "names.safetensors")
    (tmp_path / "text.safetensors").write_text("not weights")
    for bad, why in [("shape", "differs at"), ("names", "differs at"), ("text", "not readable"), ("absent", "not")]:
        with pytest.raises(PatchlabError, match=why) as e:
            load_connector(fresh, tmp_path / f"{bad}.safetensors", recipe)
        assert f"{bad}.safetensors" in str(e.value) and "projector.safetensors" in e.value.fix
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), fresh.state_dict().values()))


@needs_parts
def test_committed_projector_mini_hears_gender_and_language(sakura):
    """The real patchlab-mini (committed projector) answers SAKURA's gender and language questions well above chance.

    On these balanced subsets the committed projector gets 19 of 24 gender clips (chance 50%) and 14 of 16 language
    clips (chance 25%); all clips: 80.0% and 82.4% (MODEL_CARD.md). A projector that ignored the audio would sit at
    chance (at least 17 of 24 by chance: p = 0.03; 11 of 16: p < 0.001); the bars leave two and three clips for CPU
    float drift.
    """
    from patchlab.answer import single_hop_accuracy

    lalm = patchlab.load("patchlab-mini")
    assert not lalm.is_random and lalm.family == "patchlab_mini"
    gender = single_hop_accuracy(lalm, sakura, ["Gender"], limit=24)
    language = single_hop_accuracy(lalm, sakura, ["Language"], limit=16)
    assert gender["correct"].sum() >= 17 and language["correct"].sum() >= 11


@pytest.mark.parametrize("peer", ["transformer_lens", "nnsight"])
def test_mini_sweep_matches_peer(tiny_mini, toy_data, peer):
    """patchlab-mini's full resid_pre sweep equals a per-cell peer loop (TransformerLens bridges its Llama decoder)."""
    pytest.importorskip(peer)
    from patchlab.corrupt import make_pair
    from patchlab.data import label_set
    from patchlab.metrics import final_metrics
    from patchlab.patching import patch, sweep
    from patchlab.patching.reference import per_cell_sweep
    from patchlab.record import record

    samples = load_track(toy_data, "Gender")
    labels = label_set(tiny_mini, [s.label for s in samples], "direct")
    p = make_pair(tiny_mini, samples[0], "swap", "direct", labels.index(samples[0].label), samples, seed=1)
    n = tiny_mini.n_layers
    ours = patch(tiny_mini, [p], sweep(n, p.clean.length), labels.token_ids, progress=False).table
    cells = [(la, pos) for la in range(n) for pos in range(0, p.clean.length, 7)]
    ref = per_cell_sweep(tiny_mini, p, "resid_pre", backend=peer, cells=cells)
    clean_logits = record(tiny_mini, p.clean, ["resid_pre"], [0]).final_logits[0]
    theirs = final_metrics(ref, labels.token_ids, p.label, clean_logits)["logit_diff"].numpy()
    mine = ours.set_index(["layer", "position"]).loc[cells, "logit_diff"].to_numpy()
    assert np.abs(mine - theirs).max() <= 1e-4
