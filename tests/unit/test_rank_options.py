"""The launcher resolves ``train``'s options once and every rank uses exactly those.

A rank on another host has neither the launcher's ``HVDTRAIN_*`` variables, nor its
``--config`` file, nor its working directory; before, it re-parsed its argv there and trained
with defaults without a word (the multi-host half of this is tests/multihost/test_runs.py).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from hvdtrain.commands import main
from hvdtrain.commands.options import options_in_rank, with_absolute_paths
from hvdtrain.errors import ConfigError
from hvdtrain.launch.protocol import RANK_OPTIONS_ENV, encode_rank_options, rank_options


def _options_of_dry_run(output: str) -> dict[str, Any]:
    last = output.strip().splitlines()[-1]
    for token in shlex.split(last):
        name, _, value = token.partition("=")
        if name == RANK_OPTIONS_ENV:
            return dict(json.loads(value))
    raise AssertionError(f"no {RANK_OPTIONS_ENV} in {last}")


def test_ranks_get_the_options_resolved_on_the_launching_host(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.csv").write_text("a,b,label\n" + "".join(
        f"{i},{i % 7},{i % 2}\n" for i in range(40)))
    (tmp_path / "run.yaml").write_text("batch_size: 16\nlr: 0.002\nseed: 5\n")
    monkeypatch.setenv("HVDTRAIN_EPOCHS", "2")
    monkeypatch.setenv("HVDTRAIN_SEED", "6")  # environment beats the file
    result = CliRunner().invoke(main, [
        "train", "-np", "2", "--config", "run.yaml", "--data", "data.csv",
        "--run-dir", "out", "--lr", "0.003", "--dry-run"])  # the flag beats both
    assert result.exit_code == 0, result.output
    options = _options_of_dry_run(result.output)
    assert (options["epochs"], options["batch_size"], options["lr"], options["seed"]) == (
        2, 16, 0.003, 6)
    assert options["data"] == str(tmp_path / "data.csv")  # absolute: ranks start elsewhere
    assert options["run_dir"] == str(tmp_path / "out")
    assert not (tmp_path / "out").exists()  # still a dry run


def test_file_options_become_absolute_and_resume_words_stay(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    given = {"data": "d/x.csv", "resume": "ckpt/epoch-0001.ckpt", "run_dir": "r",
             "timeline_filename": "t.json", "epochs": 3}
    assert with_absolute_paths(given) == {
        "data": f"{tmp_path}/d/x.csv", "resume": f"{tmp_path}/ckpt/epoch-0001.ckpt",
        "run_dir": f"{tmp_path}/r", "timeline_filename": f"{tmp_path}/t.json", "epochs": 3}
    words = {"data": "digits", "resume": "auto", "run_dir": None, "timeline_filename": None}
    assert with_absolute_paths(words) == words
    assert with_absolute_paths({**words, "resume": "latest"})["resume"] == "latest"


def _rank_view(args: list[str], sent: dict[str, Any] | None,
               monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What ``options_in_rank`` makes of ``args`` in a rank that got ``sent``."""
    if sent is None:
        monkeypatch.delenv(RANK_OPTIONS_ENV, raising=False)
    else:
        monkeypatch.setenv(RANK_OPTIONS_ENV, encode_rank_options(sent))
    seen: dict[str, Any] = {}

    @click.command()
    @click.option("--epochs", type=int, default=10, envvar="HVDTRAIN_EPOCHS")
    @click.option("--resume", default=None)
    @click.pass_context
    def rank(ctx: click.Context, **kw: Any) -> None:
        seen.update(options_in_rank(kw, ctx))

    result = CliRunner().invoke(rank, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return seen


def test_a_rank_uses_the_launchers_options_over_its_own_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HVDTRAIN_EPOCHS", "7")  # this host's own variable: not what was asked
    assert _rank_view([], {"epochs": 2, "resume": None}, monkeypatch) == {
        "epochs": 2, "resume": None}
    # a restart adds --resume to the rank's command line: that flag wins
    assert _rank_view(["--resume", "auto"], {"epochs": 2, "resume": None}, monkeypatch) == {
        "epochs": 2, "resume": "auto"}


def test_a_rank_of_a_users_own_launcher_parses_as_before(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HVDTRAIN_EPOCHS", "7")
    assert _rank_view(["--resume", "latest"], None, monkeypatch) == {
        "epochs": 7, "resume": "latest"}


@pytest.mark.parametrize("value", ["not json", "[1, 2]"])
def test_a_garbled_options_variable_is_an_error_not_a_silent_default(value: str) -> None:
    with pytest.raises(ConfigError, match=RANK_OPTIONS_ENV):
        rank_options({RANK_OPTIONS_ENV: value})
