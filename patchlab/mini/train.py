"""Train the connector of patchlab-mini (an MLP projector) or patchlab-mini-qformer (a Q-Former) on synthetic
attribute questions; Whisper and the LLM stay frozen.

The frozen audio side is computed once per clip and cached; only the connector gets gradients. patchlab-mini leaves
out language clips whose language Whisper's own language ID does not recognize; patchlab-mini-qformer gives them a
text in their language as transcription (see `qformer_build.language_texts`).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data import build_prompt, load_track, tracks, verbalize
from ..data.phonetic import TRACK as LETTER
from ..data.phonetic import WRITE
from ..data.sakura import Sample
from ..errors import PatchlabError
from ..io import write_json
from ..models.base import Prompt
from . import base_model
from .processor import distinct_audio

TRAIN_FORMATS = ("mc", "qa", "direct")


@dataclass
class Example:
    audio: Any  # the frozen audio side of one clip (EncodedAudio, TappedAudio): `.tokens`, `.expand(text, token)`
    prompt: Prompt
    target: str
    track: str = ""
    label: str = ""


@dataclass(frozen=True)
class Recipe:
    """What differs between the two small models' training: how to assemble it, which part learns, how the frozen
    audio side is cached and which clips are kept, how cached clips become embeddings, where the weights go."""

    family: str
    assemble: Callable  # (random connector, seed) -> (model, processor)
    connector: Callable  # model -> the trained module
    prepare: Callable  # (model, processor, samples) -> ({path: cached clip}, kept samples, log entries)
    embed: Callable  # (model, input_ids, cached clips) -> input embeddings
    weights: str  # file name of the trained weights
    save_dtype: torch.dtype = torch.float32
    attribute_weight: float = 0.0  # weight of the training-only attribute loss (`AttributeHeads`); 0: none


def encode_clips(model, processor, samples: list[Sample], batch: int = 8, desc: str = "encoding audio") -> dict:
    """The frozen audio side per distinct clip (keyed by content hash), computed once: stacked Whisper frames and
    Whisper's language-ID distribution."""
    out: dict = {}
    keyed, key_of = distinct_audio(samples, processor.feature_extractor.sampling_rate)
    keys = list(keyed)
    for i in tqdm(range(0, len(keys), batch), desc=desc):
        chunk = keys[i : i + batch]
        feats = [processor.features(keyed[k], processor.feature_extractor.sampling_rate) for k in chunk]
        with torch.no_grad():
            encoded = model.model.encode_audio(
                torch.cat([f["input_features"] for f in feats]), torch.cat([f["feature_attention_mask"] for f in feats])
            )
        out.update(zip(chunk, encoded))
    return {path: out[key] for path, key in key_of.items()}


def recognized_languages(samples: list[Sample], encoded: dict) -> list[Sample]:
    """Drop clips labelled with a language that Whisper's own language ID, among the labelled languages, does not
    pick: espeak-ng's Chinese, Korean and French are rarely recognizable, and training the model to answer against
    its language-ID token would teach it to distrust that token. Other clips are kept."""
    from .parts import whisper_language_table

    names = [lang["name"] for lang in whisper_language_table()["languages"]]
    labelled = sorted({s.label.lower() for s in samples} & set(names))
    if not labelled or encoded[str(samples[0].path)].language is None:
        return samples
    columns = torch.tensor([names.index(n) for n in labelled])
    kept = []
    for s in samples:
        lang = encoded[str(s.path)].language
        if s.label.lower() not in labelled or labelled[int(lang[columns].argmax())] == s.label.lower():
            kept.append(s)
    return kept


def examples(samples: list[Sample], encoded: dict, formats=TRAIN_FORMATS) -> list[Example]:
    """Every (clip, prompt format) pair with its answer text (end-of-turn included where the turn ends); a Letter
    clip also gets the transcription prompt (`phonetic.WRITE`), answered with the letter."""
    out = []
    for s in samples:
        if s.track == LETTER:
            write = Prompt(instruction=WRITE, prefix="")
            out.append(Example(encoded[str(s.path)], write, s.label.upper() + "<|im_end|>", s.track, s.label))
        for fmt in formats:
            answer = verbalize(s.label, fmt)
            out.append(
                Example(
                    encoded[str(s.path)],
                    build_prompt(s, fmt),
                    answer if fmt == "direct" else answer + "<|im_end|>",
                    s.track,
                    s.label,
                )
            )
    return out


def collate(model, processor, adapter, batch: list[Example], embed: Callable | None = None):
    """Right-padded input embeddings, attention mask and label ids (-100 except on the answer tokens)."""
    tok = processor.tokenizer
    rows, labels = [], []
    for ex in batch:
        text = ex.audio.expand(adapter.chat_text(ex.prompt), "<|AUDIO|>")
        ids = tok(text, add_special_tokens=False).input_ids
        target = tok(ex.target, add_special_tokens=False).input_ids
        rows.append(ids + target)
        labels.append([-100] * len(ids) + target)
    width = max(len(r) for r in rows)
    pad = tok.pad_token_id or 0
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    label_ids = torch.tensor([la + [-100] * (width - len(la)) for la in labels])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    clips = [ex.audio for ex in batch]
    embeds = (embed or _embed_mini)(model, input_ids, clips)  # checks placeholders = audio tokens
    return embeds, mask, label_ids


def _embed_mini(model, input_ids: torch.Tensor, clips: list) -> torch.Tensor:
    return model.model.embed(input_ids, clips)


def _prepare_mini(model, processor, samples: list[Sample]) -> tuple[dict, list[Sample], dict]:
    encoded = encode_clips(model, processor, samples)
    kept = recognized_languages(samples, encoded)
    return encoded, kept, dict(dropped_unrecognized_language=len(samples) - len(kept))


def _prepare_qformer(model, processor, samples: list[Sample]) -> tuple[dict, list[Sample], dict]:
    from .qformer_build import encode_tapped, language_texts

    clips, replaced = language_texts(samples, encode_tapped(model, processor, samples))
    return clips, samples, dict(language_clips_given_a_text=replaced)


def recipes() -> dict[str, Recipe]:
    """The two trainable small models, by name."""
    from .build import assemble
    from .qformer_build import assemble_qformer

    return {
        "patchlab-mini": Recipe(
            "patchlab_mini",
            lambda random, seed: assemble(random_projector=random, seed=seed),
            lambda m: m.model.multi_modal_projector,
            _prepare_mini,
            _embed_mini,
            "projector.safetensors",
        ),
        "patchlab-mini-qformer": Recipe(
            "patchlab_mini_qformer",
            lambda random, seed: assemble_qformer(random_connector=random, seed=seed),
            lambda m: m.model.connector,
            _prepare_qformer,
            lambda m, ids, clips: m.model.embed_clips(ids, clips),
            "connector.safetensors",
            torch.float16,
            attribute_weight=1.0,
        ),
    }


def load_connector(connector: torch.nn.Module, path: str | Path, recipe: Recipe) -> None:
    """Start from trained weights: `path` must hold exactly this connector's tensors, in their shapes; checked
    before any clip is encoded."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    fix = f"pass a {recipe.weights} written by `patchlab mini train` for this model"
    try:
        state = load_file(str(path))
    except (OSError, SafetensorError) as e:
        raise PatchlabError(f"--init {path} is not readable safetensors ({e})", fix) from None
    expected = {k: tuple(v.shape) for k, v in connector.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if found != expected:
        differ = sorted(set(found) ^ set(expected)) or sorted(k for k in found if found[k] != expected[k])
        raise PatchlabError(f"--init {path} is not this model's connector (it differs at {differ[:3]})", fix)
    connector.load_state_dict({k: v.float() for k, v in state.items()})


def answer_loss(model, embeds: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the answer tokens only (the head runs only where a label is)."""
    hidden = model.model.language_model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    where = labels[:, 1:] != -100
    logits = model.lm_head(hidden[:, :-1][where])
    return torch.nn.functional.cross_entropy(logits.float(), labels[:, 1:][where])


class AttributeHeads(torch.nn.Module):
    """Training-only linear heads, one per track, on the mean of a clip's connector outputs. Their loss asks the
    connector to carry each attribute in its own outputs, as BLIP-2's first stage trains its Q-Former before the
    LLM reads it; without it, patchlab-mini-qformer's queries fit the training voices and gender did not carry over
    to real speech. Discarded after training: the model has no such head."""

    def __init__(self, width: int, samples: list[Sample]) -> None:
        super().__init__()
        self.labels = {
            t: sorted({s.label for s in samples if s.track == t}) for t in sorted({s.track for s in samples})
        }
        self.heads = torch.nn.ModuleDict({t: torch.nn.Linear(width, len(ls)) for t, ls in self.labels.items()})

    def loss(self, outputs: torch.Tensor, batch: list[Example]) -> torch.Tensor:
        """Mean cross-entropy of each example's label from its clip's pooled outputs (clips, tokens, width)."""
        pooled = outputs.float().mean(1)
        terms = [
            torch.nn.functional.cross_entropy(
                self.heads[ex.track](pooled[i]), torch.tensor(self.labels[ex.track].index(ex.label))
            )
            for i, ex in enumerate(batch)
        ]
        return torch.stack(terms).mean()


def train(
    data: str | Path,
    out: str | Path,
    steps: int = 500,
    batch_size: int = 8,
    lr: float = 1e-3,
    seed: int = 0,
    limit: int | None = None,
    device: str = "cpu",
    model_name: str = "patchlab-mini",
    init: str | Path | None = None,
) -> dict:
    """Train the connector, from random weights or from `init` (trained weights of the same connector, to extend it
    with one more task); writes out/<weights>.safetensors and out/train.json (loss curve, settings)."""
    from safetensors.torch import save_file

    from ..models.registry import ADAPTERS

    recipe = recipes()[base_model(model_name)]
    torch.manual_seed(seed)
    random.seed(seed)
    model, processor = recipe.assemble(True, seed)
    model.to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    connector = recipe.connector(model)
    if init:
        load_connector(connector, init, recipe)
    for p in connector.parameters():
        p.requires_grad_(True)
    samples = [s for t in tracks(data) for s in load_track(data, t, limit=limit)]
    cached, kept, notes = recipe.prepare(model, processor, samples)
    pool = examples(kept, cached)
    adapter = ADAPTERS[recipe.family]
    params = list(connector.parameters())
    outputs: list[torch.Tensor] = []
    if recipe.attribute_weight:
        heads = AttributeHeads(model.config.text_config.hidden_size, kept).to(device)
        params += list(heads.parameters())
        hook = connector.register_forward_hook(lambda module, args, out: outputs.append(out))
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps))
    )
    rng = random.Random(seed)
    losses, attribute_losses = [], []
    bar = tqdm(range(steps), desc=f"training {model_name}'s connector")
    for _ in bar:
        batch = rng.sample(pool, min(batch_size, len(pool)))
        outputs.clear()
        embeds, mask, labels = collate(model, processor, adapter, batch, recipe.embed)
        loss = answer_loss(model, embeds.to(device), mask.to(device), labels.to(device))
        total = loss
        if recipe.attribute_weight:
            attribute = heads.loss(outputs[-1], batch)
            total = loss + recipe.attribute_weight * attribute
            attribute_losses.append(attribute.item())
        opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
    if recipe.attribute_weight:
        hook.remove()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().to(recipe.save_dtype).contiguous() for k, v in connector.state_dict().items()}
    save_file(state, str(out / recipe.weights))
    log = dict(
        model=model_name,
        data=str(data),
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        attribute_weight=recipe.attribute_weight,
        init=dict(path=str(init), sha256=hashlib.sha256(Path(init).read_bytes()).hexdigest()) if init else None,
        clips=len(kept),
        **notes,
        examples=len(pool),
        losses=losses,
        attribute_losses=attribute_losses,
    )
    write_json(out / "train.json", log)
    return log
