"""The README and the documentation site point at things that exist: every
relative link of the README at a file, every page of docs/ in the site, every
``python -m vmap_core COMMAND`` they show at a real command.  (The site's own
build, with warnings as errors, and its examples run in ``.ci/docs``.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vmap_core.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))


def _commands() -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return set(sub.choices)


def test_readme_links_resolve():
    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if "://" not in link]
    assert any(link.startswith("docs/") for link in local), "the README links into docs/"
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_every_page_is_in_the_site():
    index = (DOCS / "index.md").read_text()
    listed = set(re.findall(r"^([a-z][\w-]*)$", index, re.M))
    pages = {p.stem for p in PAGES} - {"index"}
    assert pages <= listed, f"pages missing from the index's toctrees: {pages - listed}"


@pytest.mark.parametrize("path", [ROOT / "README.md", *PAGES], ids=lambda p: p.name)
def test_commands_shown_exist(path):
    shown = set(re.findall(r"python -m vmap_core ([a-z][\w-]*)", path.read_text()))
    unknown = shown - _commands()
    assert not unknown, f"{path.name} shows commands that do not exist: {unknown}"
