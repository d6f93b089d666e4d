"""The docs cannot drift from the tree: a newcomer's README, and ``docs/`` holding the rest.

- ``docs/ARCHITECTURE.md`` names every module and package of ``hvdtrain/`` and every command
  the CLI registers (with the module that defines it), and nothing that does not exist.
- Every relative link in ``README.md`` and ``docs/*.md`` reaches a file (and, for a ``#part``
  into a Markdown file, a heading of it); the README links every docs page.
- Every repository path a page names in backticks exists.
- The README stays short; each docs page opens with its title and a one-line summary.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from hvdtrain.commands import main

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "hvdtrain"
README = ROOT / "README.md"
DOCS = ROOT / "docs"
ARCHITECTURE = DOCS / "ARCHITECTURE.md"
README_MAX_LINES = 250

PAGES = [README, *sorted(DOCS.glob("*.md"))]
# Top-level directories whose paths, named in backticks, must exist.
REPO_DIRS = ("hvdtrain", "bench", "scripts", "tests", "docker", "hostfiles", "docs", ".ci")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)\)")


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def prose(text: str) -> str:
    """The text without fenced code blocks (a link or path inside one is an example)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def code_spans(text: str) -> set[str]:
    return set(CODE_SPAN.findall(prose(text)))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(m) for m in re.findall(r"^#{1,6} (.+)$", prose(page.read_text()), re.M)}


def command_paths(group: click.Group, prefix: str = "hvdtrain") -> dict[str, str]:
    """'hvdtrain NAME [SUB]' → the module defining it, for every registered command."""
    found: dict[str, str] = {}
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            found.update(command_paths(command, path))
        module = command.callback.__module__ if command.callback else ""
        found[path] = module
    return found


def section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"{rel(ARCHITECTURE)} has no '## {title}' section"
    return match.group(1)


# --- the architecture page against the tree ---------------------------------------------------


def test_architecture_names_every_module_and_package():
    spans = code_spans(ARCHITECTURE.read_text())
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        name = rel(path)
        if path.name == "__init__.py":
            package = rel(path.parent) + "/"
            if package not in spans and name not in spans:
                missing.append(package)
        elif name not in spans:
            missing.append(name)
    assert not missing, (
        f"{rel(ARCHITECTURE)} does not name these (add each, in backticks, with its job): "
        + ", ".join(missing))


def test_architecture_names_nothing_that_does_not_exist():
    spans = code_spans(ARCHITECTURE.read_text())
    listed = [s for s in spans if re.fullmatch(r"hvdtrain/[\w/.]*", s)]
    assert listed, "the page names no module"
    gone = sorted(s for s in listed if not (ROOT / s).exists())
    assert not gone, f"{rel(ARCHITECTURE)} names modules that do not exist: {', '.join(gone)}"


def test_architecture_lists_every_command_with_its_module():
    registered = command_paths(main)
    table = section(ARCHITECTURE.read_text(), "Commands")
    rows = re.findall(r"^\| `(hvdtrain [^`]+)` \| `([^`]+)` \|", table, re.M)
    listed = dict(rows)
    assert len(listed) == len(rows), "a command is listed twice"
    assert set(listed) == set(registered), (
        f"not listed: {sorted(set(registered) - set(listed))}; "
        f"listed but not registered: {sorted(set(listed) - set(registered))}")
    for command, module_path in listed.items():
        expected = registered[command].replace(".", "/") + ".py"
        assert module_path == expected, f"{command} is defined in {expected}, not {module_path}"


# --- links, paths, length, summaries --------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_relative_links_point_at_files_that_exist(page: Path):
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path_part, _, fragment = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            broken.append(f"{target} (no {dest})")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target} (no heading '#{fragment}' in {rel(dest)})")
    assert not broken, f"{rel(page)}: broken links: {'; '.join(broken)}"


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_repository_paths_named_exist(page: Path):
    gone = []
    for span in code_spans(page.read_text()):
        if not re.fullmatch(r"[\w.-]+(/[\w.-]+)+/?", span):
            continue
        if span.split("/", 1)[0] in REPO_DIRS and not (ROOT / span).exists():
            gone.append(span)
    assert not gone, f"{rel(page)} names paths that do not exist: {', '.join(sorted(gone))}"


def test_readme_is_short_and_links_every_docs_page():
    text = README.read_text()
    lines = len(text.splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): it is for a newcomer's first "
        "ten minutes; move reference material into a docs/ page and link it")
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in LINK.findall(text)}
    unlinked = [rel(p) for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert not unlinked, f"README.md links no: {', '.join(unlinked)}"


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=rel)
def test_docs_page_opens_with_title_and_one_line_summary(page: Path):
    lines = page.read_text().splitlines()
    assert len(lines) >= 4 and lines[0].startswith("# "), f"{rel(page)}: first line is not a title"
    summary = lines[2].strip()
    assert lines[1] == "" and summary and not summary.startswith(("#", "```", "|", "-")), (
        f"{rel(page)}: the title is not followed by a one-line summary")
    assert lines[3] == "", f"{rel(page)}: the summary is longer than one line"
