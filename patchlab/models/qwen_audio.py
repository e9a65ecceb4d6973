"""Qwen-Audio / Qwen-Audio-Chat through the checkpoint's own remote code (`modeling_qwen.py`, `audio.py`, ...).

The real `QWenLMHeadModel` is loaded unchanged and driven through its own modules: the audio encoder
(`transformer.audio.encode`), the embedding, the rotary table (`transformer.rotary_emb`), the blocks
`transformer.h[i]`, `transformer.ln_f` and `lm_head`. What patchlab adds is a thin HF-style front (`QwenAudioLM`):
tensors instead of an `audio_info` dict, blocks that take HF-style layer arguments and give a tensor back, keys and
values in HF's layout, `logits_to_keep`. Its logits equal the real forward's (tests/test_seed_models.py).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from ..errors import PatchlabError
from ..regions import Regions
from .base import Adapter, Prompt
from .remote import import_module, load_exactly, remote_code_refused, stage_package

CODE_FILES = [
    "modeling_qwen.py",
    "configuration_qwen.py",
    "tokenization_qwen.py",
    "qwen_generation_utils.py",
    "audio.py",
    "qwen.tiktoken",
    "mel_filters.npz",
]
# transformers 5 breakages, mended beside the code rather than in it: `.cpp_kernels` is imported relatively (only
# for quantized caches) but not in the repository.
STUBS = {"cpp_kernels.py": "cache_autogptq_cuda_256 = None  # patchlab stub: quantized-cache kernels are not used\n"}
SYSTEM = "You are a helpful assistant."  # QWenLMHeadModel.chat's default system prompt


def _no_head_mask(self, head_mask, num_hidden_layers):
    """transformers 5 removed PreTrainedModel.get_head_mask, which QWenModel.forward calls (no head mask: Nones)."""
    if head_mask is not None:
        raise PatchlabError("head masks are not supported", "pass head_mask=None")
    return [None] * num_hidden_layers


def code(path: str | Path) -> SimpleNamespace:
    """The checkpoint's own modules, imported from a private copy (see patchlab.models.remote)."""
    pkg = stage_package(Path(path), CODE_FILES, STUBS, "qwen_audio")
    ns = SimpleNamespace(
        modeling=import_module(pkg, "modeling_qwen"),
        configuration=import_module(pkg, "configuration_qwen"),
        tokenization=import_module(pkg, "tokenization_qwen"),
        generation=import_module(pkg, "qwen_generation_utils"),
        audio=import_module(pkg, "audio"),
    )
    if not hasattr(ns.modeling.QWenModel, "get_head_mask"):
        ns.modeling.QWenModel.get_head_mask = _no_head_mask
    return ns


def rebuild_buffers(qwen: nn.Module, mods: SimpleNamespace) -> None:
    """transformers 5 builds models on the meta device and leaves non-persistent buffers (not in the checkpoint)
    uninitialized: `attn.logn_tensor` holds garbage (NaN logits) and `rotary_emb.inv_freq` too. Recompute them with
    the code's own constructors, on a copy of the config shrunk to one dimension per head (the buffers depend only on
    `seq_length` and the rotary width)."""
    import copy

    cfg = copy.deepcopy(qwen.config)
    cfg.hidden_size, cfg.kv_channels = cfg.num_attention_heads, 1
    fresh = mods.modeling.QWenAttention(cfg)
    t = qwen.transformer
    rotary = mods.modeling.RotaryEmbedding(t.rotary_emb.dim, base=t.rotary_emb.base)
    with torch.no_grad():
        for block in t.h:
            for name in ("logn_tensor", "masked_bias"):
                getattr(block.attn, name).copy_(getattr(fresh, name))
        t.rotary_emb.inv_freq.copy_(rotary.inv_freq)
    bad = [n for n, b in qwen.named_buffers() if b.is_floating_point() and not torch.isfinite(b).all()]
    if bad:
        raise PatchlabError(f"buffers {bad[:3]} hold NaN/inf after loading", "report it with your transformers version")


class _Cache:
    """Keys and values of a full forward, per layer, in HF's layout (batch, heads, positions, head_dim)."""

    def __init__(self) -> None:
        self.layers: list[SimpleNamespace] = []


class QwenBlock(nn.Module):
    """`transformer.h[i]` called with HF-style layer arguments; returns the hidden states (a tensor).

    The real block is referenced, not registered: its weights keep their checkpoint names (`qwen.transformer.h.i`).
    """

    def __init__(self, block: nn.Module, index: int) -> None:
        super().__init__()
        object.__setattr__(self, "block", block)
        self.index = index
        self.collect: _Cache | None = None  # set by QwenDecoder during a forward that keeps keys and values

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        rotary_pos_emb_list: list | None = None,
        cache: Any = None,
        **_: Any,
    ) -> torch.Tensor:
        collect = self.collect
        layer_past = None
        if cache is not None:  # the prefix keys/values a suffix forward attends to
            b, heads = hidden_states.shape[0], self.block.attn.num_heads
            empty = hidden_states.new_zeros(b, heads, 0, self.block.attn.head_dim)
            k, v = cache.update(empty, empty, self.index)
            layer_past = (k.transpose(1, 2), v.transpose(1, 2))
        out = self.block(
            hidden_states,
            rotary_pos_emb_list=rotary_pos_emb_list,
            layer_past=layer_past,
            attention_mask=attention_mask,
            use_cache=collect is not None,
        )
        if collect is not None:
            k, v = out[1]
            collect.layers.append(SimpleNamespace(keys=k.transpose(1, 2), values=v.transpose(1, 2)))
        return out[0]


class QwenDecoder(nn.Module):
    """`transformer.h` + `transformer.ln_f` as an HF decoder: `forward(inputs_embeds=...)` runs what QWenModel.forward
    runs after it has written the audio into the embeddings (dynamic-NTK rotary table, blocks, final norm)."""

    def __init__(self, transformer: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "transformer", transformer)
        self.layers = nn.ModuleList([QwenBlock(b, i) for i, b in enumerate(transformer.h)])
        self.config = transformer.config

    @property
    def norm(self) -> nn.Module:
        return self.transformer.ln_f

    def forward(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None, use_cache: bool = False, **_: Any
    ) -> tuple[torch.Tensor, _Cache | None]:
        t = self.transformer
        n = inputs_embeds.shape[1]
        if attention_mask is not None and not bool(attention_mask.all()):
            raise PatchlabError("padded batches are not supported for qwen_audio", "batch clips of equal length")
        alpha = t.get_ntk_alpha(n) if t.use_dynamic_ntk and not t.training else 1.0
        t.rotary_emb._ntk_alpha_cached_list = [alpha]
        rotary = [t.rotary_emb(n, ntk_alpha=alpha)]
        collect = _Cache() if use_cache else None
        h = t.drop(inputs_embeds)
        try:
            for layer in self.layers:
                layer.collect = collect
                h = layer(h, attention_mask=None, rotary_pos_emb_list=rotary)
        finally:
            for layer in self.layers:
                layer.collect = None
        return t.ln_f(h), collect


class QwenAudioLM(nn.Module):
    """The real QWenLMHeadModel (`.qwen`) behind the interface patchlab's engine drives."""

    def __init__(self, qwen: nn.Module) -> None:
        super().__init__()
        self.qwen = qwen
        self.config = qwen.config
        self.decoder = QwenDecoder(qwen.transformer)

    @property
    def lm_head(self) -> nn.Module:
        return self.qwen.lm_head

    def get_input_embeddings(self) -> nn.Module:
        return self.qwen.transformer.wte

    def embed(
        self, input_ids: torch.Tensor, input_audios: torch.Tensor | None, input_audio_lengths: torch.Tensor | None
    ) -> torch.Tensor:
        """Token embeddings with each clip's audio written between (and over) its start and end tokens, as
        QWenModel.forward writes it (one audio per row)."""
        t = self.qwen.transformer
        x = t.wte(input_ids)
        if input_audios is None:
            return x
        start = self.config.audio["audio_start_id"]
        rows, a = torch.where(input_ids == start)
        _, b = torch.where(input_ids == start + 1)
        spans = (b - a + 1).tolist()
        audios = t.audio.encode(input_audios, input_audio_lengths, spans)
        x = x.clone()
        for row, lo, hi, audio in zip(rows.tolist(), a.tolist(), b.tolist(), audios):
            x[row, lo : hi + 1] = audio.to(x.dtype)
        return x

    def forward(
        self,
        input_ids: torch.Tensor,
        input_audios: torch.Tensor | None = None,
        input_audio_lengths: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        use_cache: bool = False,
        logits_to_keep: int = 0,
        **_: Any,
    ) -> CausalLMOutputWithPast:
        x = self.embed(input_ids, input_audios, input_audio_lengths)
        h, cache = self.decoder(inputs_embeds=x, attention_mask=attention_mask, use_cache=use_cache)
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        return CausalLMOutputWithPast(logits=self.qwen.lm_head(h), cache=cache)

    def own_forward(self, input_ids: torch.Tensor, input_audios: torch.Tensor, input_audio_lengths: torch.Tensor):
        """The checkpoint's own forward, with the `audio_info` dict its tokenizer makes (the reference)."""
        start = self.config.audio["audio_start_id"]
        spans = ((input_ids == start + 1).nonzero()[:, 1] - (input_ids == start).nonzero()[:, 1] + 1).tolist()
        info = {"input_audios": input_audios, "input_audio_lengths": input_audio_lengths, "audio_span_tokens": spans}
        return self.qwen(input_ids=input_ids, audio_info=info, use_cache=False).logits


class QwenAudioProcessor:
    """Qwen-Audio's tokenizer and audio front end (the code's own `log_mel_spectrogram`, `pad_or_trim`,
    `get_T_after_cnn`), fed a waveform array instead of a path its `load_audio` would hand to ffmpeg."""

    sampling_rate = 16000

    def __init__(self, modules: SimpleNamespace, tokenizer: Any) -> None:
        self.code = modules
        self.tokenizer = tokenizer
        self.feature_extractor = SimpleNamespace(sampling_rate=self.sampling_rate)

    def audio_info(self, audio: np.ndarray) -> dict[str, Any]:
        """What `QWenTokenizer.process_audio` returns for one clip, computed from the array."""
        a = self.code.audio
        n = min(audio.shape[0], a.N_SAMPLES)
        mel = a.log_mel_spectrogram(a.pad_or_trim(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))))
        after_cnn = a.get_T_after_cnn(n // a.HOP_LENGTH)
        tokens = (after_cnn - 2) // 2 + 1
        return {
            "input_audios": mel[None],
            "input_audio_lengths": torch.IntTensor([[after_cnn, tokens]]),
            "audio_span_tokens": [tokens + 2],
            "audio_urls": ["clip"],
        }

    def context(self, prompt: Prompt, info: dict[str, Any]) -> list[int]:
        """Token ids of the chat prompt exactly as `QWenLMHeadModel.chat` builds them (its own `make_context`), then
        the assistant turn's prefix."""
        tok = self.tokenizer
        query = tok.from_list_format([{"audio": "clip"}, {"text": prompt.instruction}])
        proxy = _ArrayAudio(tok, info)
        _, ids, _ = self.code.generation.make_context(proxy, query, system=SYSTEM, chat_format="chatml")
        if prompt.prefix:
            ids = ids + tok.encode(prompt.prefix, allowed_special=set(tok.AUDIO_ST))
        return ids


class _ArrayAudio:
    """The real tokenizer, except that `process_audio` returns the clip's audio_info instead of loading a path."""

    def __init__(self, tokenizer: Any, info: dict[str, Any]) -> None:
        self._tok, self._info = tokenizer, info

    def process_audio(self, text: str) -> dict[str, Any] | None:
        return self._info if self._tok.audio_start_tag in text else None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tok, name)


class QwenAudioAdapter(Adapter):
    family = "qwen_audio"
    model_types = ("qwen",)
    description = (
        "Qwen-Audio(-Chat) through its checkpoint's remote code (trust_remote_code=True): Whisper-large-v2-like "
        "encoder, 25 audio tokens/s between audio start/end tokens, Qwen-7B"
    )
    needs_remote_code = True
    sampling_rate = 16000

    def load_model(self, path: str, *, dtype: torch.dtype, device_map: Any, trust_remote_code: bool, **_: Any):
        src = Path(path)
        if not trust_remote_code:
            raise remote_code_refused(self.family, path, "modeling_qwen.py, audio.py, tokenization_qwen.py")
        cfg = json.loads((src / "config.json").read_text())
        if "audio" not in cfg:
            raise PatchlabError(
                f"{path} is a Qwen text model (model_type 'qwen' without an `audio` section)",
                "point patchlab at a Qwen-Audio or Qwen-Audio-Chat checkpoint",
            )
        mods = code(src)
        config = mods.configuration.QWenConfig.from_pretrained(path)
        # the precision flags decide the dtype the code casts to; flash attention would ignore edited masks
        config.bf16, config.fp16 = dtype == torch.bfloat16, dtype == torch.float16
        config.fp32 = not (config.bf16 or config.fp16)
        config.use_flash_attn = False
        with contextlib.redirect_stdout(io.StringIO()):  # the code prints the mel filter path it copies
            qwen = mods.modeling.QWenLMHeadModel.from_pretrained(
                path, config=config, dtype=dtype, device_map=device_map
            )
        # from_pretrained re-runs the code's _init_weights over c_proj.weight after loading: put the saved tensors back
        load_exactly(qwen, src, path)
        rebuild_buffers(qwen, mods)
        qwen.config._attn_implementation = "sdpa"
        model = QwenAudioLM(qwen.eval())
        return model

    def load_processor(self, path: str) -> QwenAudioProcessor:
        mods = code(Path(path))
        with contextlib.redirect_stdout(io.StringIO()):  # the tokenizer prints its audio ids
            tok = mods.tokenization.QWenTokenizer(str(Path(path) / "qwen.tiktoken"))
        return QwenAudioProcessor(mods, tok)

    def decoder(self, model: nn.Module) -> nn.Module:
        return model.decoder

    def lm_head(self, model: nn.Module) -> nn.Module:
        return model.qwen.lm_head

    def text_config(self, model: nn.Module):
        return model.config

    def audio_encoder(self, model: nn.Module) -> nn.Module:
        return model.qwen.transformer.audio

    def audio_token_id(self, model: nn.Module, processor: Any) -> int:
        return int(processor.tokenizer.audio_pad_id)

    def special_ids(self, processor: Any) -> set[int]:
        return set(processor.tokenizer.special_tokens.values())

    # the real block's parts, as it calls them (the wrapper references the block: its weights keep their names)
    block_parts = {"attention": "block.attn", "mlp": "block.mlp", "mlp_norm": "block.ln_2"}

    def o_proj(self, attn: nn.Module) -> nn.Module:
        return attn.c_proj

    def prepare_inputs(self, lalm: Any, prompt: Prompt, audio: np.ndarray, sampling_rate: int, like: Any = None):
        processor = lalm.processor
        info = processor.audio_info(audio)
        ids = torch.tensor([processor.context(prompt, info)])
        tensors = {
            "input_ids": ids,
            "input_audios": info["input_audios"],
            "input_audio_lengths": info["input_audio_lengths"],
        }
        return tensors, self.regions(processor, ids[0])

    def regions(self, processor: Any, ids: torch.Tensor) -> Regions:
        """Audio = the audio start token through the end token: every position the model writes audio into."""
        tok = processor.tokenizer
        regions = Regions.from_ids(ids, tok.audio_pad_id, self.special_ids(processor))
        lo, hi = (ids == tok.audio_start_id).nonzero()[0, 0].item(), (ids == tok.audio_end_id).nonzero()[0, 0].item()
        audio = tuple(range(lo, hi + 1))
        return Regions(regions.length, audio, regions.text, tuple(p for p in regions.special if p not in audio))

    def tiny(self, tokenizer: Any, out_dir: str, code_dir: str | None = None) -> None:
        """A tiny random-weight Qwen-Audio: the real code and tokenizer (vocabulary 155,947), a 2-layer decoder of
        width 32 and a 2-layer audio encoder of width 32."""
        import shutil

        from .tiny import lalm_code_dir, mark_random

        src = lalm_code_dir("qwen-audio", code_dir)
        out = Path(out_dir)
        for f in [*CODE_FILES, "tokenizer_config.json", "LICENSE", "NOTICE"]:
            shutil.copyfile(src / f, out / f)
        shutil.copyfile(src / "chat_generation_config.json", out / "generation_config.json")
        cfg = json.loads((src / "config.json").read_text())
        cfg.update(hidden_size=32, intermediate_size=128, num_attention_heads=4, kv_channels=8, num_hidden_layers=2)
        cfg["audio"].update(n_state=32, n_head=2, n_layer=2, output_dim=32)
        cfg.update(fp32=True, use_flash_attn=False)
        mods = code(src)
        config = mods.configuration.QWenConfig(**{k: v for k, v in cfg.items() if k != "model_type"})
        mark_random(config)
        model = mods.modeling.QWenLMHeadModel(config)
        model.save_pretrained(out)
        cfg.update(patchlab_random_weights=True, patchlab_note=config.patchlab_note)
        (out / "config.json").write_text(json.dumps(cfg, indent=2))  # the checkpoint's own layout (auto_map)
