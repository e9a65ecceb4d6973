"""The shared HookedLALM interface: one wrapper over any adapter-described audio-language model."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.prompts import Prompt
from ..errors import PatchlabError
from ..regions import Regions
from .features import features_in_float64
from .memo import EncoderMemo


@dataclass
class Batch:
    """Model inputs for rows of equal token length, with each row's token-region map."""

    tensors: dict[str, torch.Tensor]
    regions: list[Regions]
    meta: list[dict[str, Any]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.regions)

    @property
    def length(self) -> int:
        return self.regions[0].length

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Batch:
        """Move tensors to a device; floating tensors (audio features) also to `dtype` when given."""
        out = {}
        for k, v in self.tensors.items():
            v = v.to(device)
            out[k] = v.to(dtype) if dtype is not None and v.is_floating_point() else v
        return replace(self, tensors=out)

    def repeat(self, n: int) -> Batch:
        """The same rows n times over (row order: all rows, then all rows again), for batching patches."""
        return Batch({k: torch.cat([v] * n) for k, v in self.tensors.items()}, self.regions * n, self.meta * n)

    @staticmethod
    def stack(batches: list[Batch]) -> Batch:
        """Concatenate batches whose rows all have the same token length and feature shapes."""
        lengths = {b.length for b in batches}
        if len(lengths) != 1:
            raise PatchlabError(
                f"cannot stack inputs of different token lengths {sorted(lengths)}",
                "batch samples of equal length, or run them one at a time",
            )
        keys = batches[0].tensors.keys()
        tensors = {k: torch.cat([b.tensors[k] for b in batches]) for k in keys}
        return Batch(tensors, [r for b in batches for r in b.regions], [m for b in batches for m in b.meta])


class Adapter:
    """Everything family-specific: where the decoder is, how to build inputs, how to make a tiny config.

    The defaults fit decoders laid out as `model.model.language_model.{layers,norm}` + `model.lm_head`
    with Llama/Qwen2-style blocks; `block_parts` says where a block's attention, MLP and the norm before the MLP are
    (the hook sites and the nnsight backend find them there), `o_proj` its attention's output projection.
    """

    # a decoder block's parts, as attribute paths from the block (Llama's by default)
    block_parts: dict[str, str] = {"attention": "self_attn", "mlp": "mlp", "mlp_norm": "post_attention_layernorm"}

    family: str = ""
    model_types: tuple[str, ...] = ()
    description: str = ""
    sampling_rate: int = 16000
    max_seconds: float | None = 30.0  # longest clip the audio encoder takes in one window (None: no limit)
    trust_remote_code: bool = False  # families transformers ships never run a checkpoint's code; the generic
    # adapter does only with consent given for that checkpoint (patchlab.load(..., trust_remote_code=True))
    audio_queries: int | None = None  # a connector with a fixed number of outputs (Q-Former queries), any clip length

    model_class_name: str = ""
    needs_remote_code: bool = False  # the model's code ships with the checkpoint (or is the user's own package)

    def model_class(self) -> type:
        import transformers

        return getattr(transformers, self.model_class_name)

    def load_model(self, path: str, *, dtype: torch.dtype, device_map: Any, attn_implementation: str, **_: Any):
        """The model, as the family's own class loads it (families with remote code override this)."""
        return self.model_class().from_pretrained(
            path,
            dtype=dtype,
            device_map=device_map,
            attn_implementation=attn_implementation,
            trust_remote_code=self.trust_remote_code,
        )

    def load_processor(self, path: str) -> Any:
        """The family's real processor; where it cannot be built here, `processor_parts` (see docs/adapters.md)."""
        from transformers import AutoProcessor

        try:
            processor = AutoProcessor.from_pretrained(path, trust_remote_code=self.trust_remote_code)
            if hasattr(processor, "tokenizer"):  # a processor, not a bare tokenizer
                return processor
        except (ImportError, OSError, ValueError, TypeError, AttributeError):
            pass
        return self.processor_parts(path)

    def processor(self, path: str, model: nn.Module) -> Any:
        """The processor of a loaded checkpoint (families whose package builds it with the model override this)."""
        return self.load_processor(path)

    def processor_parts(self, path: str) -> Any:
        """What to use when the full processor cannot be built (e.g. a missing optional backend)."""
        raise PatchlabError(
            f"cannot build the {self.family} processor from {path}",
            "check that the directory holds the processor files (processor_config.json, tokenizer files)",
        )

    @staticmethod
    def whisper_parts(path: str) -> Any:
        """A Whisper feature extractor and the tokenizer, for adapters that assemble inputs themselves."""
        from types import SimpleNamespace

        from transformers import AutoTokenizer, WhisperFeatureExtractor

        return SimpleNamespace(
            feature_extractor=WhisperFeatureExtractor.from_pretrained(path),
            tokenizer=AutoTokenizer.from_pretrained(path, trust_remote_code=False),
        )

    # decoder layout
    def decoder(self, model: nn.Module) -> nn.Module:
        return model.model.language_model

    def lm_head(self, model: nn.Module) -> nn.Module:
        return model.lm_head

    def text_config(self, model: nn.Module):
        return model.config.text_config

    def audio_encoder(self, model: nn.Module) -> nn.Module | None:
        """The audio encoder (the shallowest module named `audio_tower`, else `encoder`); None if there is none."""
        for suffix in ("audio_tower", "encoder"):
            found = [(n.count("."), n, m) for n, m in model.named_modules() if n.split(".")[-1] == suffix]
            if found:
                return min(found, key=lambda f: f[:2])[2]
        return None

    def o_proj(self, attn: nn.Module) -> nn.Module:
        """The attention output projection (its input holds the per-head outputs, `head_out`)."""
        return attn.o_proj

    def block_part(self, block: Any, part: str) -> Any:
        """A decoder block's attention, MLP or MLP norm (`block_parts`), from the block or an nnsight envoy of it."""
        for name in self.block_parts[part].split("."):
            block = getattr(block, name)
        return block

    def connector_output(self, model: nn.Module) -> nn.Linear | None:
        """The last linear layer of the audio connector (what the deaf variant silences); None if not known."""
        return None

    def residual_multiplier(self, model: nn.Module) -> float:
        return float(getattr(self.text_config(model), "residual_multiplier", 1.0) or 1.0)

    def logits_scale(self, model: nn.Module) -> float:
        """Factor the head's output is multiplied by (Granite divides by logits_scaling)."""
        return 1.0

    # inputs
    def audio_token_id(self, model: nn.Module, processor: Any) -> int:
        return int(model.config.audio_token_id)

    def chat_text(self, prompt: Prompt) -> str:
        """The full prompt text with the family's single audio placeholder, before expansion."""
        raise NotImplementedError

    def prompt_text(self, processor: Any, prompt: Prompt) -> str:
        """What `prepare` hands the processor: `chat_text` by default; families whose checkpoints ship a chat
        template build it with the processor's own `apply_chat_template` instead (see TemplateChat)."""
        return self.chat_text(prompt)

    def process(self, processor: Any, text: str, audio: np.ndarray, sampling_rate: int) -> dict[str, torch.Tensor]:
        """Run the family's real processor on one (prompt text, waveform)."""
        out = processor(text=text, audio=audio, sampling_rate=sampling_rate, return_tensors="pt")
        return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}

    def prepare_inputs(
        self, lalm: HookedLALM, prompt: Prompt, audio: np.ndarray, sampling_rate: int, like: Regions | None = None
    ) -> tuple[dict[str, torch.Tensor], Regions]:
        """Model inputs for one clip and prompt, and their token-region map. `like`: the regions of the run this one
        is paired with (families with a transcript fit its length to them; see Desta2Adapter)."""
        tensors = self.process(lalm.processor, self.prompt_text(lalm.processor, prompt), audio, sampling_rate)
        return tensors, Regions.from_ids(tensors["input_ids"][0], lalm.audio_token_id, lalm._special)

    def feature_batch(self, lalm: HookedLALM, seconds: float, prompt: Prompt, seed: int = 0) -> Batch | None:
        """Inputs built from random audio *features* where the real feature extractor cannot run here (None: the
        family's processor always runs). Used by `patchlab check` and the wrapper tests, never by analyses."""
        return None

    def special_ids(self, processor: Any) -> set[int]:
        tok = processor.tokenizer
        ids = set(tok.all_special_ids)
        ids.update(getattr(tok, "added_tokens_decoder", {}).keys())
        return ids

    # tiny random checkpoints
    special_tokens: tuple[str, ...] = ()
    extra_tokenizer_attrs: dict[str, str] = {}
    tiny_eos: str = "<|endoftext|>"

    def tiny(self, tokenizer: Any, out_dir: str) -> None:
        """Write a tiny random-weight checkpoint and processor of this family to `out_dir`."""
        raise NotImplementedError


class TemplateChat:
    """Mixin: the prompt comes from the processor's chat template (one audio item, then the instruction), and the
    assistant turn starts with the prompt's prefix: exactly what the checkpoint's own template makes."""

    def prompt_text(self, processor: Any, prompt: Prompt) -> str:
        if not getattr(processor, "chat_template", None):
            raise PatchlabError(
                f"{type(processor).__name__} has no chat template", "use a checkpoint that ships chat_template.jinja"
            )
        content = [{"type": "audio"}, {"type": "text", "text": prompt.instruction}]
        messages = [{"role": "user", "content": content}]
        return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + prompt.prefix


class HookedLALM:
    """A loaded audio-language model with its processor, decoder handles and token-region maps."""

    def __init__(self, model: nn.Module, processor: Any, adapter: Adapter, source: str = "") -> None:
        self.model = model.eval()
        self.processor = processor
        self.adapter = adapter
        self.source = source
        self.decoder = adapter.decoder(model)
        self.layers: nn.ModuleList = self.decoder.layers
        self.final_norm: nn.Module = self.decoder.norm
        self.lm_head: nn.Module = adapter.lm_head(model)
        self.n_layers = len(self.layers)
        self.d_model = int(self.lm_head.weight.shape[1])
        self.residual_multiplier = adapter.residual_multiplier(model)
        self._logits_scale = adapter.logits_scale(model)
        self.audio_token_id = adapter.audio_token_id(model, processor)
        self._special = adapter.special_ids(processor)
        tc = adapter.text_config(model)
        self.n_heads = int(tc.num_attention_heads)
        self.d_head = int(getattr(tc, "head_dim", None) or self.d_model // self.n_heads)
        encoder = adapter.audio_encoder(model)
        self.encoder_memo = EncoderMemo(encoder) if encoder is not None else None
        self.run_memo: OrderedDict = OrderedDict()  # record.clean_run's shared clean runs
        if self.dtype == torch.float64:  # a float64 run computes in float64 from the waveform on
            features_in_float64(processor)

    def weights_version(self) -> int:
        """Sum of the parameters' in-place version counters: changes whenever any weight is edited in place."""
        return sum(p._version for p in self.model.parameters())

    @property
    def family(self) -> str:
        return self.adapter.family

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @property
    def sampling_rate(self) -> int:
        fe = getattr(self.processor, "feature_extractor", None) or getattr(self.processor, "audio_processor", None)
        return int(getattr(fe, "sampling_rate", self.adapter.sampling_rate))

    @property
    def is_random(self) -> bool:
        """True for checkpoints patchlab made with random weights (plumbing tests only)."""
        return bool(getattr(self.model.config, "patchlab_random_weights", False))

    def prepare(
        self, audio: np.ndarray, sampling_rate: int, prompt: Prompt | str, like: Batch | None = None, **meta: Any
    ) -> Batch:
        """Turn one (waveform, sample rate, prompt) into model inputs and a token-region map (`like`: the clean run a
        corrupted one is paired with)."""
        if isinstance(prompt, str):
            prompt = Prompt(instruction=prompt)
        if sampling_rate != self.sampling_rate:
            raise PatchlabError(
                f"audio at {sampling_rate} Hz given to a processor that expects {self.sampling_rate} Hz",
                "load audio with patchlab.data.load_audio(path, rate=model.sampling_rate) to resample it",
            )
        audio = np.asarray(audio, dtype=np.float64 if self.dtype == torch.float64 else np.float32)
        if audio.ndim != 1 or audio.size == 0:
            raise PatchlabError(
                f"audio must be a non-empty mono waveform, got shape {audio.shape}",
                "mix channels to mono and skip empty clips (patchlab.data.load_audio does both checks)",
            )
        window = self.adapter.max_seconds
        if window is not None and audio.shape[0] > window * sampling_rate:
            raise PatchlabError(
                f"clip of {audio.shape[0] / sampling_rate:.1f} s is longer than {self.family}'s {window:.0f} s window",
                f"trim it (patchlab.data.load_audio(path, max_seconds={window:.0f}) refuses such clips) or split it",
            )
        tensors, regions = self.adapter.prepare_inputs(
            self, prompt, audio, sampling_rate, like.regions[0] if like is not None else None
        )
        return Batch(tensors, [regions], [dict(meta)])

    def token_id(self, text: str) -> int:
        """The first sub-token of a verbalization (what the logit lens reads for a label)."""
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if not ids:
            raise PatchlabError(f"label verbalization {text!r} encodes to no token", "give a non-empty label")
        return int(ids[0])

    @torch.no_grad()
    def forward(self, batch: Batch) -> torch.Tensor:
        """Plain model forward; returns logits (batch, positions, vocab)."""
        return self.model(**batch.to(self.device, self.dtype).tensors, use_cache=False).logits

    def unembed(self, resid: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Logit lens: final norm then the head (optionally only vocabulary `rows`), as the model does it."""
        h = self.final_norm(resid.to(self.dtype))
        w = self.lm_head.weight if rows is None else self.lm_head.weight[rows]
        b = getattr(self.lm_head, "bias", None)
        out = h @ w.T
        if b is not None:
            out = out + (b if rows is None else b[rows])
        return out * self._logits_scale
