"""Model code that ships with a checkpoint (remote code) or as the user's own package, imported without editing it.

A checkpoint's Python files are copied, unchanged, into a private package under patchlab's cache (named by a hash
of their bytes) with the stubs transformers 5 lacks beside them, and imported from there: the user's folder is only
read, and transformers' dynamic-module machinery (which refuses files it cannot resolve) is not involved.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

import torch

from ..errors import PatchlabError


def remote_code_refused(family: str, path: str, files: str) -> PatchlabError:
    """The error for a checkpoint whose code would run without the user's consent."""
    return PatchlabError(
        f"{path} is a {family} checkpoint: its model code ({files}) ships with the checkpoint and runs as Python when "
        "loaded, so patchlab does not run it unasked",
        "if you trust that folder's code, pass trust_remote_code=True (patchlab.load) or --trust-remote-code (CLI), "
        "or `trust_remote_code: true` in the experiment config",
    )


def stage_package(src: Path, files: list[str], stubs: dict[str, str], family: str) -> str:
    """Copy `files` from `src` (and `stubs`: name -> source) into a cached package; return its import name."""
    from ..mini.parts import cache_dir

    missing = [f for f in files if not (src / f).is_file()]
    if missing:
        raise PatchlabError(
            f"{src} lacks the {family} code files {missing}",
            "copy the checkpoint folder again from its source: its remote code belongs beside config.json",
        )
    digest = hashlib.sha256()
    for name in files:
        digest.update(name.encode() + b"\0" + (src / name).read_bytes())
    for name, text in sorted(stubs.items()):
        digest.update(name.encode() + b"\0" + text.encode())
    name = f"patchlab_remote_{family}_{digest.hexdigest()[:16]}"
    root = cache_dir() / "remote-code"
    pkg = root / name
    if not pkg.is_dir():
        tmp = root / f"{name}.partial{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)  # our own half-written copy from a killed run
        tmp.mkdir(parents=True)
        for f in files:
            shutil.copyfile(src / f, tmp / f)
        for f, text in stubs.items():
            (tmp / f).write_text(text)
        (tmp / "__init__.py").write_text("")
        try:
            tmp.rename(pkg)
        except OSError:  # another process staged the same code first
            shutil.rmtree(tmp, ignore_errors=True)
    if str(root) not in sys.path:
        sys.path.append(str(root))
    return name


def import_module(package: str, module: str) -> ModuleType:
    """Import `package.module` quietly (remote code prints on import and on load)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return importlib.import_module(f"{package}.{module}")


def disk_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder's safetensors files (or pytorch_model*.bin), as saved."""
    from safetensors.torch import load_file

    files = sorted(path.glob("*.safetensors"))
    if files:
        return {k: v for f in files for k, v in load_file(str(f)).items()}
    bins = sorted(path.glob("pytorch_model*.bin"))
    if not bins:
        raise PatchlabError(f"{path} holds no weight files", "copy the checkpoint's *.safetensors files beside it")
    return {k: v for f in bins for k, v in torch.load(f, map_location="cpu", weights_only=True).items()}


def load_exactly(model: torch.nn.Module, path: Path, where: str) -> int:
    """Make every parameter and persistent buffer equal the tensor saved on disk (cast to its dtype); refuse a load
    that cannot. Returns how many tensors the loader had left different (e.g. re-initialized after loading)."""
    disk = disk_tensors(path)
    state = model.state_dict()
    missing = sorted(set(state) - set(disk))
    if missing:
        raise PatchlabError(
            f"{where}: {len(missing)} weights are not in the checkpoint files (first: {missing[:3]})",
            "the checkpoint is incomplete or of another model: copy its weight files again",
        )
    fixed = 0
    with torch.no_grad():
        for name, t in state.items():
            saved = disk[name].to(t.device, t.dtype)
            if saved.shape != t.shape:
                raise PatchlabError(
                    f"{where}: weight {name} is {tuple(saved.shape)} on disk but {tuple(t.shape)} in the model",
                    "config.json does not match the weight files: restore both from the same checkpoint",
                )
            if not torch.equal(saved, t):
                t.copy_(saved)
                fixed += 1
        bad = [n for n, t in model.state_dict().items() if not torch.equal(disk[n].to(t.device, t.dtype), t)]
    if bad:
        raise PatchlabError(
            f"{where}: {len(bad)} weights differ from the checkpoint after loading (first: {bad[:3]})",
            "report this with your transformers version: patchlab will not analyse weights other than those saved",
        )
    return fixed
