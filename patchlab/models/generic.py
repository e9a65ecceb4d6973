"""The generic adapter: a transformers LALM patchlab has no family file for, read from the model itself.

It works for models in the common layout: a decoder base model (a module with `embed_tokens`, `layers` and
`norm`), an output head (`lm_head` or the output embeddings), an audio placeholder token (from the config or
the processor) and a processor that takes `text=` and `audio=` and has a chat template. It says which parts it
found; `patchlab check` says whether they were the right ones. What it cannot find is a clear error naming
the part and pointing to docs/adapters.md.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import PatchlabError
from .base import Adapter, TemplateChat

GUIDE = "write a family adapter (docs/adapters.md: one file, then `patchlab check`)"


class GenericAdapter(TemplateChat, Adapter):
    """An adapter built at load time from a checkpoint's config (`architectures`) and the loaded model."""

    def __init__(self, model_type: str, architecture: str) -> None:
        self.family = f"generic:{model_type}"
        self.model_types = (model_type,)
        self.model_class_name = architecture
        self.treated_as = architecture
        self.description = f"{architecture} through the generic adapter"
        self.max_seconds = None  # the family's processor decides; a long clip is its to chunk or refuse
        self.found: dict[str, str] = {}

    def model_class(self) -> type:
        import transformers

        cls = getattr(transformers, self.model_class_name, None)
        if cls is None:
            raise PatchlabError(
                f"transformers has no class {self.model_class_name!r} (the checkpoint's config.json `architectures`)",
                f"upgrade transformers, or {GUIDE}",
            )
        return cls

    def load_processor(self, path: str) -> Any:
        from transformers import AutoProcessor

        try:
            processor = AutoProcessor.from_pretrained(path, trust_remote_code=self.trust_remote_code)
        except (OSError, ValueError, ImportError) as e:
            raise PatchlabError(f"{path}: the generic adapter could not build the processor ({e})", GUIDE) from None
        if not hasattr(processor, "tokenizer"):
            raise PatchlabError(f"{path}: AutoProcessor gave a bare tokenizer, not an audio processor", GUIDE)
        return processor

    def decoder(self, model: nn.Module) -> nn.Module:
        found = [
            (name, m)
            for name, m in model.named_modules()
            if isinstance(getattr(m, "layers", None), nn.ModuleList)
            and hasattr(m, "norm")
            and hasattr(m, "embed_tokens")
        ]
        if not found:
            raise PatchlabError(
                f"{self.model_class_name}: no decoder found (a module with embed_tokens, layers and norm)", GUIDE
            )
        name, module = max(found, key=lambda nm: len(nm[1].layers))
        self.found["decoder"] = name
        return module

    def lm_head(self, model: nn.Module) -> nn.Module:
        head, name = getattr(model, "lm_head", None), "lm_head"
        if head is None:
            head, name = model.get_output_embeddings(), "output embeddings"
        if head is None:
            raise PatchlabError(f"{self.model_class_name}: no output head (lm_head) found", GUIDE)
        self.found["head"] = name
        return head

    def text_config(self, model: nn.Module):
        cfg = getattr(model.config, "thinker_config", None) or model.config  # Omni-style configs nest the thinker
        return getattr(cfg, "text_config", None) or cfg

    def audio_token_id(self, model: nn.Module, processor: Any) -> int:
        for key in ("audio_token_id", "audio_token_index"):
            value = getattr(model.config, key, None)
            if value is not None:
                self.found["audio token"] = f"config.{key} = {value}"
                return int(value)
        token = getattr(processor, "audio_token", None) or getattr(processor.tokenizer, "audio_token", None)
        if token:
            self.found["audio token"] = f"processor.audio_token {token!r}"
            return int(processor.tokenizer.convert_tokens_to_ids(token))
        raise PatchlabError(
            f"{self.model_class_name}: no audio placeholder token (config.audio_token_id / processor.audio_token)",
            GUIDE,
        )
