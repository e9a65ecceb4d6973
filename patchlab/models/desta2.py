"""DeSTA2 through the user's `desta` package (kehanlu/DeSTA2): Whisper -> Q-Former connector (64 vectors) -> Llama 3.

The package's `DestaModel` is loaded as its own `from_pretrained` loads it and its inputs are built by its own
`process_text` (chat template, Whisper's transcription after the audio, the audio insertion point, BOS handling:
the template's BOS plus the tokenizer's, and the audio inserted where `len(tokenize(left_text))` says). patchlab
adds a placeholder token at the 64 audio positions so the engine sees one token sequence; the front (`DestaLM`)
writes the connector's vectors there. Its logits equal the package's own `prepare_llm_input` + Llama forward.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import PatchlabError
from ..regions import Regions
from .base import Adapter, Prompt
from .desta2_tiny import write_tiny
from .remote import remote_code_refused
from .transcript import fit_transcript, transcript_tokens

SYSTEM = "You are a helpful voice assistant."  # the system turn of DeSTA2's own usage example
AUDIO_MARK = "<patchlab-audio-path>"  # stands for the audio path in the messages; process_text splits on it
AUDIO_TOKEN = "<|reserved_special_token_0|>"  # a Llama 3 token no text produces: patchlab's audio placeholder
LLAMA3_TEMPLATE = (  # Meta-Llama-3-8B-Instruct's chat template
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


@contextlib.contextmanager
def _inside(path: Path):
    """DeSTA2 names Whisper and Llama by model id (`openai/whisper-small`, its table of tapped layers keys on it):
    resolve those ids against the checkpoint folder (a local `openai/whisper-small/` there), as the package would
    against the working directory."""
    here = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(here)


def desta_package() -> Any:
    try:
        from desta import modeling_desta
    except ImportError as e:
        raise PatchlabError(
            f"the DeSTA2 package `desta` is not importable ({e})",
            "install it from its repository: pip install -e DeSTA2 (git clone https://github.com/kehanlu/DeSTA2)",
        ) from None
    return modeling_desta


class DestaLM(nn.Module):
    """The package's DestaModel (`.desta`) behind the interface patchlab's engine drives."""

    def __init__(self, desta: nn.Module, audio_token_id: int) -> None:
        super().__init__()
        self.desta = desta
        self.config = desta.llama.config
        self.config.patchlab_random_weights = bool(getattr(desta.config, "patchlab_random_weights", False))
        self.audio_token_id = audio_token_id

    def get_input_embeddings(self) -> nn.Module:
        return self.desta.llama.model.embed_tokens

    def speech_features(self, input_features: torch.Tensor) -> torch.Tensor:
        """The connector's 64 vectors per clip, from the Whisper encoder's hidden states (what `generate` hands it)."""
        sp = self.desta.speech_perception
        enc = sp.whisper.model.encoder(input_features.to(sp.whisper.dtype), output_hidden_states=True)
        return sp.connector(enc.hidden_states)

    def embed(self, input_ids: torch.Tensor, input_features: torch.Tensor | None) -> torch.Tensor:
        x = self.desta.llama.model.embed_tokens(input_ids)
        if input_features is None:
            return x
        audio = self.speech_features(input_features).to(x.dtype)
        slots = (input_ids == self.audio_token_id).unsqueeze(-1)
        return x.masked_scatter(slots, audio)

    def forward(
        self,
        input_ids: torch.Tensor,
        input_features: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        use_cache: bool = False,
        logits_to_keep: int = 0,
        **_: Any,
    ):
        x = self.embed(input_ids, input_features)
        return self.desta.llama(
            inputs_embeds=x, attention_mask=attention_mask, use_cache=use_cache, logits_to_keep=logits_to_keep
        )

    def own_forward(self, audio: np.ndarray, prompt: Prompt) -> torch.Tensor:
        """The package's own path (its `speech_perception.generate`, `process_text`, `prepare_llm_input`, Llama):
        the reference the front is tested against."""
        d = self.desta
        feats = d.speech_perception.processor(audio, sampling_rate=16000, return_tensors="pt").input_features
        transcription, speech = d.speech_perception.generate(feats.to(d.speech_perception.whisper.dtype))
        inputs, position = d.process_text(messages(prompt), AUDIO_MARK, transcription)
        ids = inputs.input_ids
        mask = inputs.attention_mask
        if prompt.prefix:
            extra = d.tokenizer(prompt.prefix, add_special_tokens=False, return_tensors="pt")
            ids, mask = torch.cat([ids, extra.input_ids], 1), torch.cat([mask, extra.attention_mask], 1)
        embeds, att = d.prepare_llm_input(ids, mask, position, speech)
        return d.llama(inputs_embeds=embeds, attention_mask=att, use_cache=False).logits


def messages(prompt: Prompt) -> list[dict[str, str]]:
    """DeSTA2's message list: system, the audio turn (a path; here a mark), the user's instruction."""
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "audio", "content": AUDIO_MARK},
        {"role": "user", "content": prompt.instruction},
    ]


class Desta2Adapter(Adapter):
    family = "desta2"
    model_types = ("DestaModel",)
    description = (
        "DeSTA2 through the `desta` package (trust_remote_code=True): Whisper -> Q-Former (64 vectors) -> Llama 3, "
        "Whisper's transcription after the audio (region `transcript`)"
    )
    needs_remote_code = True
    audio_queries = 64  # the connector's query tokens (prompt_size)
    special_tokens = ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", AUDIO_TOKEN)
    tiny_eos = "<|eot_id|>"

    def load_model(self, path: str, *, dtype: torch.dtype, device_map: Any, trust_remote_code: bool, **_: Any):
        if not trust_remote_code:
            raise remote_code_refused(self.family, path, "the `desta` package's DestaModel, loading Whisper and Llama")
        if device_map is not None:
            raise PatchlabError(
                "device_map is not supported for desta2 (the package loads Llama itself)",
                "load on one device: device='cuda' (Llama 3 8B in bfloat16 fits one 24 GB GPU)",
            )
        pkg = desta_package()
        root = Path(path).resolve()
        with _inside(root):
            desta = pkg.DestaModel.from_pretrained(str(root))
        desta = desta.to(dtype).eval()
        tok = desta.tokenizer
        audio_id = tok.convert_tokens_to_ids(AUDIO_TOKEN)
        if audio_id is None or audio_id == tok.unk_token_id:
            raise PatchlabError(
                f"{path}: the Llama tokenizer has no {AUDIO_TOKEN}", "use Llama 3's tokenizer (it reserves that token)"
            )
        return DestaLM(desta, int(audio_id))

    def processor(self, path: str, model: nn.Module) -> Any:
        """The package's own tokenizer and Whisper feature extractor (it builds both when it loads)."""
        sp = model.desta.speech_perception
        return SimpleNamespace(tokenizer=model.desta.tokenizer, feature_extractor=sp.processor.feature_extractor)

    def decoder(self, model: nn.Module) -> nn.Module:
        return model.desta.llama.model

    def lm_head(self, model: nn.Module) -> nn.Module:
        return model.desta.llama.lm_head

    def text_config(self, model: nn.Module):
        return model.desta.llama.config

    def audio_encoder(self, model: nn.Module) -> nn.Module:
        return model.desta.speech_perception.whisper.model.encoder

    def audio_token_id(self, model: nn.Module, processor: Any) -> int:
        return int(model.audio_token_id)

    def prepare_inputs(self, lalm: Any, prompt: Prompt, audio: np.ndarray, sampling_rate: int, like: Regions = None):
        d = lalm.model.desta
        tok = d.tokenizer
        feats = d.speech_perception.processor(audio, sampling_rate=sampling_rate, return_tensors="pt").input_features
        with torch.no_grad():
            transcription, _ = d.speech_perception.generate(feats.to(lalm.device, d.speech_perception.whisper.dtype))
        context = tok.apply_chat_template(messages(prompt), tokenize=False, add_generation_prompt=True)
        inputs, position = d.process_text(messages(prompt), AUDIO_MARK, transcription)
        ids = inputs.input_ids[0].tolist()
        # the transcription's tokens: those whose characters fall in it (process_text puts it after the audio turn)
        heard, at = transcript_tokens(
            tok, context.replace(AUDIO_MARK, transcription), context.index(AUDIO_MARK), transcription
        )
        if prompt.prefix:
            ids += tok(prompt.prefix, add_special_tokens=False).input_ids
        if like is not None and len(heard) != len(like.transcript):
            ids, heard = fit_transcript(ids, heard, at, len(like.transcript), tok)
        n = d.speech_perception.connector.cfg.prompt_size
        full = ids[:position] + [lalm.audio_token_id] * n + ids[position:]
        shift = lambda i: i if i < position else i + n  # noqa: E731
        regions = Regions.from_ids(torch.tensor(full), lalm.audio_token_id, lalm._special)
        transcript = tuple(shift(i) for i in heard)
        text = tuple(p for p in regions.text if p not in transcript)
        regions = Regions(regions.length, regions.audio, text, regions.special, transcript)
        return {"input_ids": torch.tensor([full]), "input_features": feats}, regions

    def tiny(self, tokenizer: Any, out_dir: str, code_dir: str | None = None) -> None:
        write_tiny(tokenizer, Path(out_dir), LLAMA3_TEMPLATE, desta_package(), _inside)
