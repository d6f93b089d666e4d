"""The exit-code table (``errors.ExitCode``) and the places that cannot import it agree.

Users script against exit codes (Slurm requeues on 75, CI tells a bad config from a crash),
so the README's list is a contract: it is parsed here and compared with the table, number
and words, wherever the docs put it (README.md or a page under docs/). Shell scripts that
name a code are checked the same way.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hvdtrain import errors
from hvdtrain.errors import ExitCode

ROOT = Path(__file__).resolve().parents[2]
LIST_START = "2 options/config"

# Members the README's list does not name, and why. STOPPED: the README gives 75 its own
# sections (stop on request, Slurm), but not this list yet. CANNOT_START: a rank's own code
# (its wrapper's), which the list covers as "a failing rank's own exit code". ENV_PROBLEMS:
# ``hvdtrain env``'s status, not a job's.
NOT_IN_THE_LIST = {ExitCode.STOPPED, ExitCode.CANNOT_START, ExitCode.ENV_PROBLEMS}


def _documented_list() -> dict[int, str]:
    """``{code: words}`` from the one sentence of the docs that lists the exit codes."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    found = [(page, " ".join(page.read_text().split())) for page in pages if page.exists()]
    holding = [(page, text) for page, text in found if LIST_START in text]
    assert len(holding) == 1, (f"the exit-code list ({LIST_START!r} ...) should be in exactly "
                               f"one page, found in {[str(p) for p, _ in holding]}")
    _page, text = holding[0]
    sentence = re.search(re.escape(LIST_START) + r".*?\.(?=\s|$)", text)
    assert sentence is not None
    listed: dict[int, str] = {}
    for item in re.split(r"[,;]", sentence.group(0).rstrip(".")):
        match = re.fullmatch(r"(\d+) (.+)", item.strip())
        if match:  # "a failing rank's own exit code otherwise" names no code
            listed[int(match.group(1))] = match.group(2)
    return listed


def test_the_readme_list_matches_the_table() -> None:
    listed = _documented_list()
    assert {code: words for code, words in listed.items() if code not in set(ExitCode)} == {}, \
        "the docs list an exit code that ExitCode does not have"
    assert {code: words for code, words in listed.items() if ExitCode(code).label != words} \
        == {}, "the docs' words for a code differ from its ExitCode label"
    missing = set(ExitCode) - set(listed)
    assert missing == NOT_IN_THE_LIST, (
        f"not in the docs' list: {sorted(missing - NOT_IN_THE_LIST)}; now listed (drop them "
        f"from NOT_IN_THE_LIST): {sorted(NOT_IN_THE_LIST - missing)}")


def test_every_error_class_takes_its_code_from_the_table() -> None:
    classes = [c for c in vars(errors).values()
               if isinstance(c, type) and issubclass(c, errors.HvdtrainError)]
    assert len(classes) >= 10
    assert [c.__name__ for c in classes if not isinstance(c.exit_code, ExitCode)] == []


def test_codes_stay_plain_ints_to_users() -> None:
    """An IntEnum member is its number: sys.exit, JSON and messages see no enum (str() is
    the number on 3.10 too, where IntEnum's own says ``ExitCode.STOPPED``)."""
    assert ExitCode.STOPPED == 75 and ExitCode(75) is ExitCode.STOPPED
    assert (str(ExitCode.STOPPED), f"{ExitCode.TIMEOUT}", json.dumps([ExitCode.DATA])) == (
        "75", "124", "[6]")
    assert len({code.label for code in ExitCode}) == len(ExitCode)
    assert all(code.label for code in ExitCode)


@pytest.mark.parametrize(("script", "name", "code"), [
    ("docker/slurm/hvdtrain.sbatch", "EXIT_STOPPED", ExitCode.STOPPED),
])
def test_shell_scripts_name_the_same_codes(script: str, name: str, code: ExitCode) -> None:
    """A shell script cannot import the table, so it repeats the number; this keeps it right."""
    found = re.findall(rf"\b{name}=(\d+)\b", (ROOT / script).read_text())
    assert [int(n) for n in found] == [code], f"{script} sets {name} to {found}"
