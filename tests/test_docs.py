"""The docs as a new user reads them: every config they name exists and is valid, every `patchlab run` they show has
its --out, and no machine-specific path (a developer's /tmp or model folder) is left in them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from patchlab.experiment import load_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "patchlab").rglob("*.md"))]


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_a_doc_names_only_configs_that_exist_and_load(doc):
    for name in sorted(set(re.findall(r"experiments/[\w/]+\.yaml", doc.read_text()))):
        assert (ROOT / name).is_file(), f"{doc.name} names {name}, which does not exist"
        load_config(ROOT / name)


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_a_doc_holds_no_machine_path_and_every_run_has_its_out(doc):
    text = doc.read_text()
    assert not re.findall(r"(?<![\w.])(/tmp/|~/models|/models/|/root/|/home/)", text), doc.name
    for command in re.findall(r"patchlab run [^`\n]*", text):
        if "CONFIG" in command or "..." in command:
            continue  # a template, not a command
        assert "--out" in command, f"{doc.name}: `{command}` lacks --out"


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_every_picture_and_page_a_doc_links_exists(doc):
    for target in re.findall(r"\]\(([^)#\s]+\.(?:png|md))\)", doc.read_text()):
        if "://" not in target:
            assert (doc.parent / target).is_file(), f"{doc.name} links {target}, which does not exist"
