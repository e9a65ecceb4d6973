"""`patchlab check`: every family's tiny checkpoint passes; a broken adapter fails on the right line; a new family
loads through the generic adapter with no family code and passes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import patchlab
from patchlab.check import run_checks, table
from patchlab.cli import main
from patchlab.errors import PatchlabError
from patchlab.models import registry

# families whose code comes from ../shared/lalm-code run `patchlab check` in tests/test_seed_models.py
ALL = [f for f, _ in patchlab.families() if not registry.adapter_for_family(f).needs_remote_code]


def _failed(checks) -> set[str]:
    return {c.name for c in checks if not c.passed}


@pytest.mark.parametrize("family", ALL)
def test_check_passes_on_every_familys_tiny_checkpoint(family, tiny_dir, capsys):
    assert main(["check", str(tiny_dir(family))]) == 0
    out = capsys.readouterr().out
    assert "9 passed, 0 failed" in out and "RANDOM WEIGHTS" in out and "head knockout = the hand-edited mask" in out


def test_an_audio_region_shifted_by_one_fails_the_region_check(tiny_dir):
    lalm = patchlab.load(tiny_dir("qwen2_audio"))
    real = lalm.prepare

    def shifted(*a, **k):
        batch = real(*a, **k)
        r = batch.regions[0]
        batch.regions[0] = type(r)(r.length, tuple(p + 1 for p in r.audio), r.text, r.special)
        return batch

    lalm.prepare = shifted
    checks = run_checks(lalm)
    assert "audio region = positions the model writes audio into" in _failed(checks)
    assert "look at: the adapter's audio_token_id()" in table(checks)


def test_hooks_on_the_wrong_modules_fail_the_lens_and_batched_checks(tiny_dir):
    lalm = patchlab.load(tiny_dir("qwen2_audio"))
    lalm.layers = nn.ModuleList(list(lalm.layers)[::-1])  # an adapter that lists the blocks out of order
    failed = _failed(run_checks(lalm))
    assert "lens at the last layer = the model's logits" in failed
    assert "batched layer-skipping patching = one full forward per patch" in failed
    assert "hooked forward = plain forward" not in failed  # hooks that only read change nothing


def test_a_new_family_loads_through_the_generic_adapter_and_passes(tiny_dir, monkeypatch):
    path = tiny_dir("glm_asr")
    monkeypatch.setattr(registry, "ADAPTERS", {k: v for k, v in registry.ADAPTERS.items() if k != "glm_asr"})
    with pytest.warns(UserWarning, match="generic adapter as GlmAsrForConditionalGeneration"):
        lalm = patchlab.load(path)
    assert lalm.family == "generic:glmasr" and lalm.adapter.found["decoder"] == "model.language_model"
    checks = run_checks(lalm)
    assert not _failed(checks), table(checks)


def test_the_generic_adapter_names_the_part_it_cannot_find():
    from patchlab.models.generic import GenericAdapter

    adapter = GenericAdapter("bert", "BertModel")
    with pytest.raises(PatchlabError, match="no decoder found") as e:
        adapter.decoder(nn.Sequential(nn.Linear(2, 2)))
    assert "docs/adapters.md" in e.value.fix
    with pytest.raises(PatchlabError, match="no class 'NoSuchModel'"):
        GenericAdapter("x", "NoSuchModel").model_class()


def test_moe_mlp_out_is_the_routed_sum_the_residual_receives(tiny_dir):
    from patchlab.data import tone

    lalm = patchlab.load(tiny_dir("qwen3_omni_moe"))
    batch = lalm.prepare(tone(1.0), 16000, "What is the speaker's gender?")
    c = patchlab.record(lalm, batch, ["resid_mid", "mlp_out", "resid_post"], [1])
    assert torch.allclose(c["resid_post", 1], c["resid_mid", 1] + c["mlp_out", 1], atol=1e-5)
