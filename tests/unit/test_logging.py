"""Diagnostics go through the one ``hvdtrain`` logger: the CLI's ``-v``/``-q`` choose what shows,
the format is the ``hvdtrain: `` prefix the prints had, and a library caller gets no handler.

The note used here is the launcher's "not on this host" note of a ``train --dry-run`` whose
only host is another one (nothing is contacted: it is a dry run).
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from hvdtrain import log
from hvdtrain.commands import main
from hvdtrain.launch.protocol import PROTOCOL_VARIABLES
from hvdtrain.log import LEVEL_ENV, level_from

NOTE = "hvdtrain: note: /nonexistent/x.csv is not on this host: the ranks check it where they run"


@pytest.fixture(autouse=True)
def _logger_restored(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts from an unconfigured logger and leaves none behind."""
    logger = logging.getLogger("hvdtrain")
    saved = (list(logger.handlers), logger.level, logger.propagate, log._cli_handler)
    monkeypatch.delenv(LEVEL_ENV, raising=False)
    yield
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]
    log._cli_handler = saved[3]


def _dry_run(tmp_path: Path, *flags: str) -> Result:
    result = CliRunner().invoke(main, [
        "train", *flags, "--dry-run", "--hosts", "10.255.255.1:2", "--data",
        "/nonexistent/x.csv", "--launcher", "horovodrun", "--controller", "gloo",
        "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    return result


def _rank_environment(result: Result) -> dict[str, str]:
    """The variables the shown launch command sets (its last line)."""
    words = shlex.split(result.stdout.strip().splitlines()[-1])
    return dict(w.split("=", 1) for w in words if "=" in w and w.split("=")[0].isupper())


def test_the_default_shows_the_note_with_the_prefix(tmp_path: Path) -> None:
    result = _dry_run(tmp_path)
    assert NOTE in result.stderr.splitlines()
    assert "hvdtrain: launcher " not in result.stderr  # debug detail only with -v
    assert "the launch runs exactly:" in result.stdout  # the result stays on stdout
    assert LEVEL_ENV not in _rank_environment(result)  # the default: nothing passed on


def test_quiet_hides_the_note_and_tells_the_ranks(tmp_path: Path) -> None:
    result = _dry_run(tmp_path, "-q")
    assert "note:" not in result.stderr
    assert "the launch runs exactly:" in result.stdout
    assert _rank_environment(result)[LEVEL_ENV] == "WARNING"


def test_verbose_shows_a_debug_line_and_tells_the_ranks(tmp_path: Path) -> None:
    result = _dry_run(tmp_path, "--verbose")
    assert NOTE in result.stderr.splitlines()
    assert ("hvdtrain: launcher horovodrun, controller gloo (asked for horovodrun, gloo; MPI "
            in result.stderr), result.stderr
    assert _rank_environment(result)[LEVEL_ENV] == "DEBUG"


def test_a_rank_takes_its_launchers_level(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A rank is ``python -m hvdtrain train`` with no flags: the variable sets its level, and
    its own flag still wins."""
    monkeypatch.setenv(LEVEL_ENV, "WARNING")
    assert "note:" not in _dry_run(tmp_path).stderr
    assert NOTE in _dry_run(tmp_path, "-v").stderr
    assert level_from(env={LEVEL_ENV: "debug"}) == logging.DEBUG
    assert level_from(env={LEVEL_ENV: "chatty"}) == logging.INFO  # not a level: the default
    assert LEVEL_ENV in PROTOCOL_VARIABLES  # so no option may ever mirror it


def test_errors_show_at_every_level() -> None:
    result = CliRunner().invoke(main, ["plan", "-q", "--hosts", "a:2", "-np", "3"])
    assert result.exit_code == 3
    assert result.stderr.startswith("hvdtrain: error: ")
    both = CliRunner().invoke(main, ["plan", "-v", "-q"])
    assert both.exit_code == 2 and "contradict" in both.output


def test_every_command_takes_verbose_and_quiet() -> None:
    def leaves(group: click.Group, prefix: str) -> dict[str, click.Command]:
        found: dict[str, click.Command] = {}
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                found.update(leaves(command, f"{prefix} {name}"))
            else:
                found[f"{prefix} {name}"] = command
        return found

    missing = [name for name, command in leaves(main, "hvdtrain").items()
               if not {"-v", "-q"} <= {o for p in command.params for o in p.opts}]
    assert not missing, missing


def test_importing_hvdtrain_configures_no_handler() -> None:
    code = (
        "import logging\n"
        "import hvdtrain, hvdtrain.commands, hvdtrain.log\n"
        "from hvdtrain.log import logger\n"
        "print(sorted(type(h).__name__ for h in logger.handlers), logging.getLogger().handlers,"
        " logger.level, logger.propagate)\n"
        "logger.warning('warning: a library caller decides whether this shows')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "['NullHandler'] [] 0 True"
    assert out.stderr == ""  # no handler, and not Python's last resort either
