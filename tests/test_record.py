"""Recording: the three hook paths give the same cache; positions, devices and dtypes are honoured."""

from __future__ import annotations

import pytest
import torch

from patchlab import record
from patchlab.data import tone
from patchlab.vocabulary import RECORD_SITES


@pytest.fixture(scope="module")
def batch(qwen):
    return qwen.prepare(tone(1.2), 16000, "What is the speaker's gender?")


@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
def test_hook_paths_agree(qwen, batch, backend):
    pytest.importorskip("transformer_lens" if backend == "transformer_lens" else "nnsight")
    ours = record(qwen, batch)
    theirs = record(qwen, batch, backend=backend)
    assert set(ours.acts) == {(s, la) for s in RECORD_SITES for la in range(qwen.n_layers)}
    assert ours.max_abs_diff(theirs) <= 1e-5
    assert (ours.final_logits - theirs.final_logits).abs().max() <= 1e-5
    # the peer wraps its own copy: patchlab's model keeps transformers' own modules
    assert type(qwen.layers[0].self_attn).__module__.startswith("transformers.")


def test_residual_identities_hold(qwen, batch):
    c = record(qwen, batch)
    for la in range(qwen.n_layers):
        assert torch.allclose(c["resid_mid", la], c["resid_pre", la] + c["attn_out", la], atol=1e-5)
        assert torch.allclose(c["resid_post", la], c["resid_mid", la] + c["mlp_out", la], atol=1e-5)
        if la + 1 < qwen.n_layers:
            assert torch.equal(c["resid_post", la], c["resid_pre", la + 1])


def test_positions_layers_dtype_and_heads(qwen, batch):
    r = batch.regions[0]
    c = record(
        qwen,
        batch,
        sites=["resid_post", "head_out"],
        layers=[1, 3],
        positions=r.audio[:3] + r.final,
        dtype=torch.float16,
    )
    assert c.layers == [1, 3] and c.sites == ["head_out", "resid_post"]
    assert c["resid_post", 1].shape == (1, 4, qwen.d_model) and c["resid_post", 1].dtype == torch.float16
    assert c["head_out", 3].shape == (1, 4, qwen.n_heads, qwen.d_head)
    full = record(qwen, batch, sites=["resid_post"], layers=[1])
    assert torch.allclose(c["resid_post", 1].float(), full["resid_post", 1][:, list(c.positions)], atol=1e-2)


@pytest.mark.parametrize("family", ["glm_asr", "music_flamingo"])
def test_transformer_lens_bridges_the_new_families_with_its_own_adapters(family, tiny_dir):
    """GLM-ASR and MusicFlamingo have TransformerBridge adapters: the whole LALM is bridged, and agrees."""
    pytest.importorskip("transformer_lens")
    import patchlab
    from patchlab.backends.tlens import bridge

    lalm = patchlab.load(tiny_dir(family))
    batch = lalm.prepare(tone(1.2), 16000, "What is the speaker's gender?")
    ours, theirs = record(lalm, batch), record(lalm, batch, backend="transformer_lens")
    assert bridge(lalm)[1] is False  # not the decoder-only fallback
    assert ours.max_abs_diff(theirs) <= 1e-5
