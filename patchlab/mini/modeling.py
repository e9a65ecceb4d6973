"""patchlab-mini as a transformers model: Whisper-base encoder -> frame stacking -> MLP projector -> SmolLM2,
plus one language-ID audio token read by Whisper's own decoder (as DeSTA2 feeds the LLM what Whisper's decoder says).

Laid out like Qwen2-Audio (`model.audio_tower`, `model.multi_modal_projector`, `model.language_model`, `lm_head`), so
it saves and loads with `from_pretrained` and every patchlab analysis treats it as any other family.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.llama.modeling_llama import LlamaModel
from transformers.models.whisper.modeling_whisper import WhisperDecoder, WhisperEncoder


def _sub_config(value, default_type: str) -> PretrainedConfig:
    if isinstance(value, PretrainedConfig):
        return value
    value = dict(value or {})
    return CONFIG_MAPPING[value.pop("model_type", default_type)](**value)


class PatchlabMiniConfig(PretrainedConfig):
    """Sub-configs of the encoder (Whisper) and decoder (Llama), the audio placeholder id and the stacking factor.

    With `language_token_ids` (Whisper's language tokens) and `start_token_id` (its start-of-transcript token) set,
    each clip ends with one more audio token: Whisper's language-ID distribution in the LLM's embedding space.
    """

    model_type = "patchlab_mini"
    sub_configs = {"audio_config": AutoConfig, "text_config": AutoConfig}

    def __init__(
        self,
        audio_config=None,
        text_config=None,
        audio_token_id: int = 49152,
        stack: int = 4,
        language_token_ids: list[int] | None = None,
        start_token_id: int | None = None,
        **kwargs,
    ):
        self.audio_config = _sub_config(audio_config, "whisper")
        self.text_config = _sub_config(text_config, "llama")
        self.audio_token_id = audio_token_id
        self.stack = stack
        self.language_token_ids = list(language_token_ids) if language_token_ids else None
        self.start_token_id = start_token_id
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(**kwargs)


def audio_token_count(mel_frames: torch.Tensor | int, stack: int) -> torch.Tensor | int:
    """Audio tokens for `mel_frames` valid mel frames: the encoder halves the rate (conv stride 2), then stacks."""
    return ((mel_frames - 1) // 2 + 1) // stack


class PatchlabMiniProjector(nn.Module):
    """Two-layer MLP from `stack` concatenated encoder frames to one decoder embedding (the only trained part)."""

    def __init__(self, config: PatchlabMiniConfig) -> None:
        super().__init__()
        d_in = config.audio_config.d_model * config.stack
        d = config.text_config.hidden_size
        self.linear_1 = nn.Linear(d_in, d)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class PatchlabMiniLanguageID(nn.Module):
    """Whisper's language identification as one LLM embedding: Whisper's decoder reads the encoder output from its
    start-of-transcript token, as Whisper does to pick a language; the softmax over its language tokens weights the
    rows of `verbalizer`, which `assemble` sets to the LLM's embeddings of the language names (frozen)."""

    def __init__(self, config: PatchlabMiniConfig) -> None:
        super().__init__()
        self.start_token_id = config.start_token_id
        self.decoder = WhisperDecoder(config.audio_config)
        self.verbalizer = nn.Linear(len(config.language_token_ids), config.text_config.hidden_size, bias=False)
        self.language_token_ids = list(config.language_token_ids)

    def probabilities(self, encoder_hidden: torch.Tensor) -> torch.Tensor:
        """(clips, languages): Whisper's language-ID distribution for each clip's encoder output."""
        start = torch.full((encoder_hidden.shape[0], 1), self.start_token_id, device=encoder_hidden.device)
        h = self.decoder(input_ids=start, encoder_hidden_states=encoder_hidden, use_cache=False).last_hidden_state
        table = self.decoder.embed_tokens.weight  # tied to Whisper's output layer
        logits = h[:, 0] @ table[torch.tensor(self.language_token_ids, device=table.device)].T
        return logits.softmax(-1, dtype=torch.promote_types(logits.dtype, torch.float32))


@dataclass
class EncodedAudio:
    """One clip through the frozen audio side: stacked encoder frames and Whisper's language-ID distribution."""

    stacked: torch.Tensor  # (tokens, d_audio * stack)
    language: torch.Tensor | None = None  # (languages,), None without a language-ID token

    @property
    def tokens(self) -> int:
        return self.stacked.shape[0] + (self.language is not None)

    def expand(self, text: str, placeholder: str) -> str:
        """The prompt with its one placeholder expanded to one per audio token."""
        return text.replace(placeholder, placeholder * self.tokens)


class PatchlabMiniPreTrainedModel(PreTrainedModel):
    config_class = PatchlabMiniConfig
    config: PatchlabMiniConfig
    base_model_prefix = "model"
    _supports_sdpa = True
    _supports_flash_attn = True
    _no_split_modules = ["LlamaDecoderLayer", "WhisperEncoderLayer", "WhisperDecoderLayer"]


class PatchlabMiniModel(PatchlabMiniPreTrainedModel):
    def __init__(self, config: PatchlabMiniConfig) -> None:
        super().__init__(config)
        self.audio_tower = WhisperEncoder(config.audio_config)
        self.multi_modal_projector = PatchlabMiniProjector(config)
        self.language_id = PatchlabMiniLanguageID(config) if config.language_token_ids else None
        self.language_model = LlamaModel(config.text_config)
        self.post_init()

    def encode_audio(
        self, input_features: torch.Tensor, feature_attention_mask: torch.Tensor | None
    ) -> list[EncodedAudio]:
        """Per clip, its valid encoder frames stacked `stack` at a time, and Whisper's language-ID distribution."""
        hidden = self.audio_tower(input_features).last_hidden_state
        k = self.config.stack
        if feature_attention_mask is None:
            mel = torch.full((hidden.shape[0],), input_features.shape[-1], device=hidden.device)
        else:
            mel = feature_attention_mask.sum(-1)
        counts = [max(int(n), 1) for n in audio_token_count(mel, k).tolist()]
        languages = [None] * len(counts) if self.language_id is None else self.language_id.probabilities(hidden)
        return [EncodedAudio(h[: n * k].reshape(n, -1), lang) for h, n, lang in zip(hidden, counts, languages)]

    def embed(self, input_ids: torch.Tensor, audio: list[EncodedAudio] | None) -> torch.Tensor:
        """Token embeddings with each clip's audio tokens (projected frames, then the language-ID token, if any)
        scattered into the placeholder positions, in order."""
        is_audio = input_ids == self.config.audio_token_id
        embeds = self.language_model.embed_tokens(input_ids.masked_fill(is_audio, 0))
        if audio is None:
            return embeds
        frames = self.multi_modal_projector(torch.cat([clip.stacked for clip in audio]).to(embeds.dtype))
        per_clip = list(frames.split([clip.stacked.shape[0] for clip in audio]))
        with_language = [i for i, clip in enumerate(audio) if clip.language is not None]
        if with_language:  # one verbalizer call for the batch; each clip's token follows its frames
            languages = torch.stack([audio[i].language for i in with_language]).to(embeds.dtype)
            for i, token in zip(with_language, self.language_id.verbalizer(languages)):
                per_clip[i] = torch.cat([per_clip[i], token[None]])
        projected = torch.cat(per_clip)
        if projected.shape[0] != int(is_audio.sum()):
            raise ValueError(
                f"{int(is_audio.sum())} audio placeholders for {projected.shape[0]} audio tokens; "
                "build inputs with the patchlab-mini processor"
            )
        return embeds.masked_scatter(is_audio[..., None], projected)

    def forward(self, input_ids=None, input_features=None, feature_attention_mask=None, inputs_embeds=None, **kwargs):
        if inputs_embeds is None:
            audio = None if input_features is None else self.encode_audio(input_features, feature_attention_mask)
            inputs_embeds = self.embed(input_ids, audio)
        return self.language_model(inputs_embeds=inputs_embeds, **kwargs)


class AudioLMHead:
    """The LM-head half shared by patchlab's small models: `self.model` (audio side + LLM) then `self.lm_head`."""

    def get_input_embeddings(self) -> nn.Module:
        return self.model.language_model.embed_tokens

    def forward(
        self,
        input_ids=None,
        input_features=None,
        feature_attention_mask=None,
        attention_mask=None,
        inputs_embeds=None,
        labels=None,
        logits_to_keep: int = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        out = self.model(
            input_ids=input_ids,
            input_features=input_features,
            feature_attention_mask=feature_attention_mask,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        hidden = out.last_hidden_state
        logits = self.lm_head(hidden[:, -logits_to_keep:] if logits_to_keep else hidden)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100
            )
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=out.cache, hidden_states=out.hidden_states)


class PatchlabMiniForConditionalGeneration(AudioLMHead, PatchlabMiniPreTrainedModel, GenerationMixin):
    def __init__(self, config: PatchlabMiniConfig) -> None:
        super().__init__(config)
        self.model = PatchlabMiniModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()


AutoConfig.register("patchlab_mini", PatchlabMiniConfig, exist_ok=True)
