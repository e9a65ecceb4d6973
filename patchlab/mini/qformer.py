"""patchlab-mini-qformer as a transformers model, built the way DeSTA2 is: Whisper base's encoder tapped at several
layers -> a small Q-Former (learned queries per tapped layer, cross-attention to the clip's frames, a learned mix
over the tapped layers) -> SmolLM2, with Whisper's own transcription of the clip written as text after the audio.

Laid out like patchlab-mini (`model.audio_tower`, `model.connector`, `model.language_model`, `lm_head`); Whisper's
decoder (`model.whisper_decoder`, frozen) writes the transcription, which the processor puts into the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.models.llama.modeling_llama import LlamaModel
from transformers.models.whisper.modeling_whisper import WhisperDecoder, WhisperEncoder

from .modeling import AudioLMHead, _sub_config
from .transcribe import WhisperTranscriber


class PatchlabQformerConfig(PretrainedConfig):
    """Sub-configs of Whisper and the LLM; the connector's shape (queries, tapped encoder layers, Q-Former depth and
    width); `transcriber`: Whisper's token ids and suppression lists for greedy transcription."""

    model_type = "patchlab_mini_qformer"
    sub_configs = {"audio_config": AutoConfig, "text_config": AutoConfig}

    def __init__(
        self,
        audio_config=None,
        text_config=None,
        audio_token_id: int = 49152,
        queries: int = 32,
        tapped_layers: list[int] | None = None,
        qformer_layers: int = 2,
        qformer_ffn: int = 1024,
        transcriber: dict | None = None,
        **kwargs,
    ):
        self.audio_config = _sub_config(audio_config, "whisper")
        self.text_config = _sub_config(text_config, "llama")
        self.audio_token_id = audio_token_id
        self.queries = queries
        self.tapped_layers = list(tapped_layers or [2, 4, 6])
        self.qformer_layers = qformer_layers
        self.qformer_ffn = qformer_ffn
        self.transcriber = dict(transcriber or {})
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(**kwargs)


def valid_frames(feature_attention_mask: torch.Tensor) -> torch.Tensor:
    """Encoder frames that hold the clip (the rest of Whisper's 30 s window is padding): conv stride 2."""
    return (feature_attention_mask.sum(-1) - 1) // 2 + 1


class QFormerLayer(nn.Module):
    """BERT-style post-norm layer: self-attention over the queries, cross-attention to the frames, feed-forward."""

    def __init__(self, d: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.self_norm = nn.LayerNorm(d)
        self.cross_attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.cross_norm = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, ffn), nn.GELU(), nn.Linear(ffn, d))
        self.ffn_norm = nn.LayerNorm(d)

    def forward(self, q: torch.Tensor, frames: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        q = self.self_norm(q + self.self_attn(q, q, q, need_weights=False)[0])
        q = self.cross_norm(q + self.cross_attn(q, frames, frames, key_padding_mask=padding, need_weights=False)[0])
        return self.ffn_norm(q + self.ffn(q))


class QFormerConnector(nn.Module):
    """DeSTA2's connector at Whisper base's size: per tapped layer its own learned queries through one shared
    Q-Former, the per-query softmax mix over tapped layers, LayerNorm, and a projection to the LLM's width. Unlike
    DeSTA2's, cross-attention sees only the clip's own frames (not the padding of Whisper's 30 s window)."""

    def __init__(self, config: PatchlabQformerConfig) -> None:
        super().__init__()
        d = config.audio_config.d_model
        n = len(config.tapped_layers)
        self.tapped_layers = list(config.tapped_layers)
        self.layer_prompts = nn.Parameter(torch.randn(n, config.queries, d))
        self.layer_weights = nn.Parameter(torch.zeros(config.queries, n))
        heads = config.audio_config.encoder_attention_heads
        self.layers = nn.ModuleList(QFormerLayer(d, heads, config.qformer_ffn) for _ in range(config.qformer_layers))
        self.norm = nn.LayerNorm(d)
        self.proj = nn.Linear(d, config.text_config.hidden_size)

    def forward(self, tapped: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """(clips, queries, d_text) from `tapped` (clips, tapped layers, T, d) of which each clip's first `frames`
        are its own."""
        b, n, t, d = tapped.shape
        padding = torch.arange(t, device=tapped.device)[None] >= frames[:, None]  # (clips, T)
        q = self.layer_prompts.to(tapped.dtype)[None].expand(b, -1, -1, -1).reshape(b * n, -1, d)
        kv = tapped.reshape(b * n, t, d)
        pad = padding.repeat_interleave(n, 0)
        for layer in self.layers:
            q = layer(q, kv, pad)
        mix = self.layer_weights.softmax(-1).T.to(q.dtype)  # (n, queries)
        q = (q.view(b, n, -1, d) * mix[None, :, :, None]).sum(1)
        return self.proj(self.norm(q))


@dataclass
class TappedAudio:
    """One clip through the frozen audio side: its own frames at each tapped layer, and Whisper's transcription."""

    tapped: torch.Tensor  # (tapped layers, frames, d_audio)
    transcript: str = ""
    queries: int = 32

    @property
    def tokens(self) -> int:
        return self.queries

    def expand(self, text: str, placeholder: str) -> str:
        """The prompt with its one placeholder expanded to one per query, followed by the transcription."""
        return text.replace(placeholder, placeholder * self.queries + self.transcript)


class PatchlabQformerPreTrainedModel(PreTrainedModel):
    config_class = PatchlabQformerConfig
    config: PatchlabQformerConfig
    base_model_prefix = "model"
    _supports_sdpa = True
    _no_split_modules = ["LlamaDecoderLayer", "WhisperEncoderLayer", "WhisperDecoderLayer"]


class PatchlabQformerModel(PatchlabQformerPreTrainedModel):
    def __init__(self, config: PatchlabQformerConfig) -> None:
        super().__init__(config)
        self.audio_tower = WhisperEncoder(config.audio_config)
        self.connector = QFormerConnector(config)
        self.whisper_decoder = WhisperDecoder(config.audio_config)
        self.language_model = LlamaModel(config.text_config)
        self.post_init()

    def tapped(self, input_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(clips, tapped layers, 1500, d) encoder hidden states at the tapped layers (index 0: the embeddings, the
        last: the final layer-normed output, as Whisper returns them), and the final output."""
        out = self.audio_tower(input_features, output_hidden_states=True)
        hidden = out.hidden_states
        return torch.stack([hidden[i] for i in self.config.tapped_layers], 1), out.last_hidden_state

    def transcriber(self) -> WhisperTranscriber:
        return WhisperTranscriber(self.whisper_decoder, self.config.transcriber)

    def embed(self, input_ids: torch.Tensor, speech: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings with each clip's query outputs (clips, queries, d) in its placeholder positions."""
        is_audio = input_ids == self.config.audio_token_id
        embeds = self.language_model.embed_tokens(input_ids.masked_fill(is_audio, 0))
        if speech is None:
            return embeds
        if speech.shape[0] * speech.shape[1] != int(is_audio.sum()):
            raise ValueError(
                f"{int(is_audio.sum())} audio placeholders for {speech.shape[0] * speech.shape[1]} query outputs; "
                "build inputs with the patchlab-mini-qformer processor"
            )
        return embeds.masked_scatter(is_audio[..., None], speech.to(embeds.dtype).reshape(-1, embeds.shape[-1]))

    def embed_clips(self, input_ids: torch.Tensor, clips: list[TappedAudio]) -> torch.Tensor:
        """`embed` from cached tapped frames (training): clips padded to the longest, padding masked."""
        frames = torch.tensor([c.tapped.shape[1] for c in clips], device=input_ids.device)
        width = int(frames.max())
        tapped = torch.stack(
            [nn.functional.pad(c.tapped.float(), (0, 0, 0, width - c.tapped.shape[1])) for c in clips]
        ).to(input_ids.device)
        return self.embed(input_ids, self.connector(tapped, frames))

    def speech(self, input_features: torch.Tensor, feature_attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The connector's query outputs for each clip (clips, queries, d_text)."""
        tapped, _ = self.tapped(input_features)
        if feature_attention_mask is None:
            frames = torch.full((tapped.shape[0],), tapped.shape[2], device=tapped.device)
        else:
            frames = valid_frames(feature_attention_mask)
        return self.connector(tapped, frames)

    def forward(self, input_ids=None, input_features=None, feature_attention_mask=None, inputs_embeds=None, **kwargs):
        if inputs_embeds is None:
            speech = None if input_features is None else self.speech(input_features, feature_attention_mask)
            inputs_embeds = self.embed(input_ids, speech)
        return self.language_model(inputs_embeds=inputs_embeds, **kwargs)


class PatchlabQformerForConditionalGeneration(AudioLMHead, PatchlabQformerPreTrainedModel, GenerationMixin):
    def __init__(self, config: PatchlabQformerConfig) -> None:
        super().__init__(config)
        self.model = PatchlabQformerModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()


AutoConfig.register("patchlab_mini_qformer", PatchlabQformerConfig, exist_ok=True)
