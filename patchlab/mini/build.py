"""Assemble a patchlab-mini checkpoint: converted parts + a projector -> one `from_pretrained` directory."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import torch

from ..errors import PatchlabError
from .parts import cache_dir, convert_parts

PROJECTOR = Path(__file__).with_name("projector.safetensors")
NAME = "patchlab-mini"
FORMAT = 2  # bumped when the assembled model changes (2: the language-ID token); older cached builds are rebuilt


def assemble(projector: Path | None = None, random_projector: bool = False, seed: int = 0):
    """The model and processor in memory: pretrained encoder, decoder (language ID) and LLM, the given (or
    committed) projector."""
    import json

    from safetensors.torch import load_file
    from transformers import AutoTokenizer, LlamaForCausalLM, WhisperFeatureExtractor
    from transformers.models.whisper.modeling_whisper import WhisperDecoder, WhisperEncoder

    from .modeling import PatchlabMiniConfig, PatchlabMiniForConditionalGeneration
    from .processor import AUDIO_TOKEN, PatchlabMiniProcessor

    parts = convert_parts()
    tok = AutoTokenizer.from_pretrained(parts / "smollm2")
    tok.add_special_tokens({"additional_special_tokens": [AUDIO_TOKEN]})
    encoder = WhisperEncoder.from_pretrained(parts / "whisper-encoder")
    decoder = WhisperDecoder.from_pretrained(parts / "whisper-decoder")
    whisper_ids = json.loads((parts / "whisper-decoder" / "languages.json").read_text())
    lm = LlamaForCausalLM.from_pretrained(parts / "smollm2")
    cfg = PatchlabMiniConfig(
        audio_config=encoder.config.to_dict(),
        text_config=lm.config.to_dict(),
        audio_token_id=tok.convert_tokens_to_ids(AUDIO_TOKEN),
        language_token_ids=[lang["token_id"] for lang in whisper_ids["languages"]],
        start_token_id=whisper_ids["start_token_id"],
        eos_token_id=lm.config.eos_token_id,
        pad_token_id=lm.config.pad_token_id,
    )
    torch.manual_seed(seed)
    model = PatchlabMiniForConditionalGeneration(cfg)
    model.model.audio_tower.load_state_dict(encoder.state_dict())
    model.model.language_model.load_state_dict(lm.model.state_dict())
    model.lm_head.weight.data.copy_(lm.lm_head.weight.data)
    model.model.language_id.decoder.load_state_dict(decoder.state_dict())
    names = [" " + lang["name"].title() for lang in whisper_ids["languages"]]
    model.model.language_id.verbalizer.weight.data.copy_(name_embeddings(lm, tok, names).T)
    projector = projector or PROJECTOR
    if not random_projector:
        model.model.multi_modal_projector.load_state_dict(load_file(str(projector)))
    else:
        model.config.patchlab_random_weights = True  # untrained projector: a plumbing model, labelled so
    processor = PatchlabMiniProcessor(
        WhisperFeatureExtractor.from_pretrained(parts / "whisper-encoder"), tok, cfg.stack, language_token=True
    )
    return model.eval(), processor


def name_embeddings(lm, tokenizer, names: list[str]) -> torch.Tensor:
    """(names, hidden): the LLM's input embedding of each name, averaged over its sub-tokens."""
    table = lm.get_input_embeddings().weight.detach()
    return torch.stack([table[tokenizer(n, add_special_tokens=False).input_ids].mean(0) for n in names])


def build(out: Path | None = None, projector: Path | None = None, force: bool = False) -> Path:
    """Write the checkpoint directory once (default ~/.cache/patchlab/patchlab-mini); reuse it while it was built
    from the same projector file and FORMAT (a checkpoint built from an older projector or layout is rebuilt)."""
    return write_build(NAME, out, Path(projector or PROJECTOR), FORMAT, force, assemble)


def write_build(name: str, out: Path | None, weights: Path, fmt: int, force: bool, assemble_from) -> Path:
    """Write `assemble_from(weights)`'s model and processor to `out` (default cache_dir()/name) unless a build from
    the same weights file and format is there. A folder is replaced only when it is a build (stamped, or a small
    model's folder in patchlab's cache) holding nothing a build does not write; anything else is refused."""
    out = Path(out or cache_dir() / name)
    digest = f"{hashlib.sha256(weights.read_bytes()).hexdigest()} format {fmt}"
    stamp = out / "projector.sha256"
    if (out / "model.safetensors").exists() and not force and stamp.exists() and stamp.read_text() == digest:
        return out
    cached = out.resolve().parent == cache_dir().resolve() and out.name.startswith(name)  # a build of it or a revision
    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not (stamp.is_file() or cached)):
        raise PatchlabError(
            f"{out} holds files that are not a {name} build (no projector.sha256 stamp)",
            "pass a new or empty folder as --out: patchlab replaces only checkpoints it built",
        )
    model, processor = assemble_from(weights)
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")  # per process: parallel test workers may build at once
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    (tmp / "projector.sha256").write_text(digest)
    if (out / "model.safetensors").exists() and stamp.exists() and stamp.read_text() == digest and not force:
        shutil.rmtree(tmp)  # another process placed the same build meanwhile
        return out
    if out.exists():
        foreign = [] if cached else not_written_by_build(out, tmp)
        if foreign:
            shutil.rmtree(tmp)
            raise PatchlabError(
                f"{out} is a {name} build that also holds files a build does not write ({', '.join(foreign[:3])})",
                "move those files out of it, or pass a new or empty folder as --out",
            )
        shutil.rmtree(out, ignore_errors=True)  # an older build, nothing else in it (checked above): replaced
    try:
        tmp.rename(out)
    except OSError:  # placed by another process between the check and the rename
        shutil.rmtree(tmp)
    return out


def not_written_by_build(out: Path, build: Path) -> list[str]:
    """Paths under `out` (relative, sorted) that a fresh build in `build` does not have: the user's files."""
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if not (build / p.relative_to(out)).exists())
