"""The command line a researcher meets first: fast help, help on every option, typo suggestions, one name for
patchlab-mini, and the README's example kept identical to examples/first_hour.py."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from patchlab.cli import main, parser
from patchlab.errors import PatchlabError

ROOT = Path(__file__).resolve().parents[1]


def test_help_does_not_import_torch():
    code = "import sys, patchlab.cli as c; c.parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _parsers(p: argparse.ArgumentParser, path: str = "patchlab"):
    yield path, p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_option_has_help_text():
    missing = [
        f"{path} {'/'.join(a.option_strings) or a.dest}"
        for path, p in _parsers(parser())
        for a in p._actions
        if not a.help and not isinstance(a, argparse._HelpAction)
    ]
    assert not missing, missing


@pytest.mark.parametrize(
    "argv, hint",
    [(["lense"], "did you mean 'lens'?"), (["mini", "evl"], "did you mean 'eval'?"),
     (["patch", "--model", "m", "--data", "d", "--track", "T", "--out", "o", "--site", "resid_prex"], "'resid_pre'")],
)  # fmt: skip
def test_a_typo_gets_the_closest_match(argv, hint, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and hint in err


def test_missing_command_names_it_not_an_internal_name(capsys):
    with pytest.raises(SystemExit):
        main([])
    err = capsys.readouterr().err
    assert "COMMAND" in err and "cmd" not in err.replace("COMMAND", "")


def test_models_lists_the_name_patchlab_mini_loads_under(capsys):
    main(["models"])
    assert re.search(r"patchlab_mini\s+patchlab-mini", capsys.readouterr().out)


def test_patchlab_mini_and_patchlab_mini_underscore_are_one_name(monkeypatch):
    import patchlab.mini.build as build
    from patchlab.models import registry

    seen = []
    monkeypatch.setattr(build, "build", lambda *args: seen.append(1) or Path("/nonexistent-mini"))
    for name in ("patchlab-mini", "patchlab_mini"):
        with pytest.raises(PatchlabError, match="nonexistent-mini"):  # the stubbed build points nowhere
            registry.load(name)
    assert len(seen) == 2


def test_the_readme_example_is_examples_first_hour():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## A researcher's script.*?```python\n(.*?)```", readme, re.S).group(1)
    assert block == (ROOT / "examples" / "first_hour.py").read_text()


def test_atp_writes_a_summary_and_a_heatmap(tiny_dir, toy_data, tmp_path):
    out = tmp_path / "atp"
    argv = ["patch", "--model", str(tiny_dir("qwen2_audio")), "--data", str(toy_data), "--track", "Gender",
            "--limit", "2", "--method", "atp", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "atp" and summary["n_samples"] == 2 and summary["labels"] == ["female", "male"]
    assert (out / "attribution_heatmap.png").stat().st_size > 1000
