"""Where results are, and copying them back when the run directory is not shared
(``launch.results``), with a fake ssh/rsync/scp: the real copy across namespace hosts is in
tests/multihost/test_runs.py."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from hvdtrain.launch import results
from hvdtrain.launch.processes import Ran
from hvdtrain.launch.protocol import RankExit, RunLayout


def _layout(tmp_path: Path, local_ranks: Sequence[int]) -> RunLayout:
    layout = RunLayout(tmp_path / "run")
    layout.prepare()
    for rank in local_ranks:
        layout.stderr_log(rank).write_text("")
    return layout


class FakeShell:
    """Answers like ssh, rsync and scp would; records every command."""

    def __init__(self, fail: str | None = None, rsync_missing_remotely: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail
        self.rsync_missing_remotely = rsync_missing_remotely

    def __call__(self, argv: Sequence[str], _timeout: float) -> Ran:
        self.calls.append(list(argv))
        if self.fail and self.fail in argv[0]:
            return Ran(255, "", "ssh: connect to host b port 22: Connection refused\n", 1.0)
        if argv[0] == "ssh":
            return Ran(0, "checkpoints\nlogs\nranks\nsummary.json\nmetrics.csv\n", "", 0.1)
        if argv[0] == "rsync" and self.rsync_missing_remotely:
            return Ran(127, "", "bash: line 1: rsync: command not found\n", 0.1)
        return Ran(0, "", "", 0.1)


def test_results_and_logs_here_need_no_copy(tmp_path: Path) -> None:
    layout = _layout(tmp_path, [0, 1])
    hosts = {0: "a", 1: "b"}
    assert results.remote_hosts(layout, hosts) == {}
    assert results.where_results_are(layout, hosts) == str(layout.root)
    shell = FakeShell()
    assert results.fetch_results(layout, hosts, shell) == results.Fetched()
    assert shell.calls == []


def test_results_on_rank_0s_host_are_named_host_colon_path(tmp_path: Path) -> None:
    layout = _layout(tmp_path, [])
    assert results.where_results_are(layout, {0: "a", 1: "b"}) == f"a:{layout.root}"


@pytest.mark.parametrize("rsync", [True, False])
def test_rank_0s_outputs_and_every_ranks_logs_are_copied(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rsync: bool) -> None:
    monkeypatch.setattr(results.shutil, "which", lambda name: f"/usr/bin/{name}" if rsync
                        else None)
    layout = _layout(tmp_path, [])
    shell = FakeShell()
    fetched = results.fetch_results(layout, {0: "a", 1: "a", 2: "b"}, shell)
    root = str(layout.root)
    assert fetched.failed == ()
    assert fetched.copied == ("a: checkpoints, logs, summary.json, metrics.csv",
                              "b: logs of rank 2")
    tool = "rsync" if rsync else "scp"
    copies = [c for c in shell.calls if c[0] == tool]
    # everything of rank 0's run directory but the launcher's own records, then b's logs
    assert copies[0][-5:] == [f"a:{root}/checkpoints", f"a:{root}/logs",
                              f"a:{root}/summary.json", f"a:{root}/metrics.csv", root + "/"]
    assert copies[1][-2:] == [f"b:{root}/logs", root + "/"]
    assert all("BatchMode=yes" in " ".join(c) for c in shell.calls)  # never a password prompt


def test_rsync_missing_on_the_remote_host_falls_back_to_scp(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results.shutil, "which", lambda name: f"/usr/bin/{name}")
    shell = FakeShell(rsync_missing_remotely=True)
    fetched = results.fetch_results(_layout(tmp_path, [0]), {0: "a", 1: "b"}, shell)
    assert [c[0] for c in shell.calls] == ["rsync", "scp"]
    assert fetched.copied == ("b: logs of rank 1",)


def test_a_failed_copy_says_what_is_where(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results.shutil, "which", lambda name: None)
    layout = _layout(tmp_path, [0])
    fetched = results.fetch_results(layout, {0: "a", 1: "b"}, FakeShell(fail="scp"))
    assert fetched.copied == ()
    assert fetched.failed == (f"b:{layout.root} (ssh: connect to host b port 22: "
                              "Connection refused)",)


def test_rank_hosts_prefer_the_plans_names() -> None:
    exits = [RankExit(0, "node1", 0, None, 1.0), RankExit(1, "node2", 0, None, 1.0)]
    assert results.rank_hosts(exits, {0: "10.0.0.1", 1: "10.0.0.2"}) == {
        0: "10.0.0.1", 1: "10.0.0.2"}
    assert results.rank_hosts(exits, None) == {0: "node1", 1: "node2"}


def test_an_sshd_without_sftp_gets_scps_own_protocol(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results.shutil, "which", lambda name: None)
    calls: list[list[str]] = []

    def shell(argv: Sequence[str], _timeout: float) -> Ran:
        calls.append(list(argv))
        if argv[0] == "scp" and "-O" not in argv:
            return Ran(255, "", "scp: Connection closed\n", 0.1)
        return Ran(0, "", "", 0.1)

    fetched = results.fetch_results(_layout(tmp_path, [0]), {0: "a", 1: "b"}, shell)
    assert fetched.copied == ("b: logs of rank 1",) and fetched.failed == ()
    assert [("-O" in c) for c in calls] == [False, True]
