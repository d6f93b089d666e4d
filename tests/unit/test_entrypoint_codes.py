"""The image's shell scripts name their exit codes, and the names carry ``ExitCode``'s numbers.

``docker/entrypoint.sh`` (and the Slurm batch script) cannot import ``hvdtrain.errors``: the
entrypoint runs before hvdtrain does, and may decide the container's exit code itself (a host
that never came). So each keeps a block of ``readonly EXIT_<MEMBER>=<value>`` lines, and this
test holds them to the table: every name is a member, every number that member's, and no
``exit`` uses a bare number instead of a name.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hvdtrain.errors import ExitCode

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ("docker/entrypoint.sh", "docker/slurm/hvdtrain.sbatch")
CONSTANT = re.compile(r"^\s*(?:readonly\s+)?EXIT_([A-Z0-9_]+)=(\d+)\b", re.M)
# `exit 5`, `exit 75`: a status by number. 0 and 1 (success, a script's own failure) are
# not hvdtrain's codes; `exit "$status"` passes a job's code on.
BARE_EXIT = re.compile(r"\bexit\s+([2-9]|\d{2,})\b")


def _code(line: str) -> str:
    """The line without its comment (what a comment says about a code is not code); a ``#``
    inside a word (``${#hosts[@]}``) does not start one."""
    return re.sub(r"(^|\s)#.*$", "", line)


@pytest.mark.parametrize("script", SCRIPTS)
def test_named_exit_codes_equal_the_table(script: str) -> None:
    text = (ROOT / script).read_text()
    named = {name: int(value) for name, value in CONSTANT.findall(text)}
    assert named, f"{script} names no exit code (expected readonly EXIT_<MEMBER>=<value> lines)"
    unknown = sorted(set(named) - set(ExitCode.__members__))
    assert unknown == [], (f"{script}: EXIT_{', EXIT_'.join(unknown)} name no member of "
                           f"hvdtrain.errors.ExitCode {sorted(ExitCode.__members__)}")
    wrong = {name: value for name, value in named.items() if ExitCode[name] != value}
    expected = "\n".join(f"readonly EXIT_{name}={ExitCode[name].value}  # {ExitCode[name].label}"
                         for name in wrong)
    assert wrong == {}, f"{script} disagrees with hvdtrain.errors.ExitCode; make it:\n{expected}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_no_exit_by_bare_number(script: str) -> None:
    lines = (ROOT / script).read_text().splitlines()
    bare = [f"{script}:{n}: {line.strip()}" for n, line in enumerate(lines, 1)
            if BARE_EXIT.search(_code(line))]
    assert bare == [], "exit by a bare number; name it (EXIT_<MEMBER> from ExitCode):\n" + \
        "\n".join(bare)


def test_the_entrypoint_exits_by_name() -> None:
    """The entrypoint's own exits (a host never came, no hostfile) use the named code."""
    text = (ROOT / "docker/entrypoint.sh").read_text()
    assert re.findall(r'\bexit "\$EXIT_([A-Z_]+)"', text), \
        "docker/entrypoint.sh no longer exits with a named code"
    assert "PREFLIGHT" in dict(CONSTANT.findall(text)), "EXIT_PREFLIGHT is not set"


def test_the_checks_catch_a_wrong_number() -> None:
    """The patterns find what they are meant to (a check that matches nothing passes)."""
    sample = ('readonly EXIT_PREFLIGHT=6  # not exit 5\n'
              '    [ "${#a[@]}" -gt 0 ] || exit 5\n'
              '    exit "$EXIT_PREFLIGHT"\n'
              '    exit 1  # a script error\n')
    assert CONSTANT.findall(sample) == [("PREFLIGHT", "6")]
    assert [bool(BARE_EXIT.search(_code(line))) for line in sample.splitlines()] == [
        False, True, False, False]
