"""``hvdtrain launch --elastic`` without a job: the checks before a user's elastic script starts
(``launch.user_elastic``), the horovodrun argv it gets, and what ``--dry-run`` shows."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hvdtrain.cluster.planning import PlacementRequest, make_plan
from hvdtrain.commands import main
from hvdtrain.errors import ConfigError
from hvdtrain.launch import elastic_hosts, job
from hvdtrain.launch.elastic_hosts import ElasticSettings
from hvdtrain.launch.job import LaunchSettings, job_command
from hvdtrain.launch.protocol import RunLayout
from hvdtrain.launch.user_elastic import elastic_plan, parse_discovery, run_discovery


def _script(tmp_path: Path, body: str, mode: int = 0o755) -> Path:
    path = tmp_path / "discover.sh"
    path.write_text(body)
    path.chmod(mode)
    return path


# -- the discovery script's output ---------------------------------------------------------------
def test_discovery_output_is_host_slots_lines() -> None:
    hosts = parse_discovery("node1:2\n\nnode-2.example:4\n", "d.sh")
    assert [(h.name, h.slots) for h in hosts] == [("node1", 2), ("node-2.example", 4)]


@pytest.mark.parametrize(("text", "message"), [
    ("node1 slots=2\n", "line 1 'node1 slots=2' is not host:slots"),
    ("node1:2\nnode2: 4\n", "line 2 'node2: 4' is not host:slots"),  # Horovod keeps the space
    ("node1:0\n", "line 1 'node1:0' is not host:slots"),
    ("node1\n", "line 1 'node1' is not host:slots"),  # horovodrun would need --slots
    ("fe80::1:2\n", "is not host:slots"),  # Horovod splits on ':'
    ("Traceback (most recent call last):\n", "line 1 'Traceback"),
    ("node1:2\nnode1:2\n", "host 'node1' is printed twice"),
    ("\n \n", "printed no hosts"),
])
def test_garbage_from_discovery_is_one_line_naming_it(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_discovery(text, "d.sh")


@pytest.mark.parametrize(("body", "mode", "message"), [
    ("#!/bin/sh\necho localhost:2\n", 0o644, "is not executable"),
    ("echo localhost:2\n", 0o755, "cannot be run"),  # no '#!': exec fails
    ("#!/bin/sh\necho 'no hosts file' >&2\nexit 3\n", 0o755,
     "exited with code 3: no hosts file"),
    ("#!/bin/sh\necho 'localhost 2'\n", 0o755, "line 1 'localhost 2' is not host:slots"),
])
def test_a_bad_discovery_script_is_refused_before_the_launch(
        tmp_path: Path, body: str, mode: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        run_discovery(str(_script(tmp_path, body, mode)))


def test_a_discovery_script_that_does_not_answer_is_refused(tmp_path: Path) -> None:
    script = _script(tmp_path, "#!/bin/sh\nexec sleep 30\n")
    with pytest.raises(ConfigError, match=r"did not answer within 0\.5 s"):
        run_discovery(str(script), timeout=0.5)
    with pytest.raises(ConfigError, match="no such file"):
        run_discovery(str(tmp_path / "missing.sh"))


# -- the plan --------------------------------------------------------------------------------------
def test_elastic_plan_checks_min_np_and_the_slots_on_offer(tmp_path: Path) -> None:
    request = PlacementRequest(hosts="localhost:2")
    with pytest.raises(ConfigError, match="--elastic needs --min-np"):
        elastic_plan(request, ElasticSettings())
    with pytest.raises(ConfigError, match=r"--min-np 3 is above the 2 slot\(s\) on offer "
                       r"\(--hosts localhost:2\)"):
        elastic_plan(request, ElasticSettings(min_np=3))
    with pytest.raises(ConfigError, match="--elastic and --max-restarts"):
        elastic_plan(request, ElasticSettings(min_np=1), max_restarts=2)
    # no -np: every slot on offer, up to --max-np
    assert elastic_plan(request, ElasticSettings(min_np=1, max_np=1)).placement.size == 1
    assert elastic_plan(request, ElasticSettings(min_np=1)).placement.size == 2
    assert elastic_plan(request, None) == make_plan(request)


def test_a_users_discovery_script_gives_the_plans_hosts(tmp_path: Path) -> None:
    script = _script(tmp_path, "#!/bin/sh\necho localhost:2\necho 127.0.0.1:1\n")
    settings = ElasticSettings(min_np=1, max_np=3, discovery_script=str(script))
    plan = elastic_plan(PlacementRequest(), settings)
    assert [(h.name, h.slots) for h in plan.hosts] == [("localhost", 2), ("127.0.0.1", 1)]
    assert plan.placement.size == 3 and plan.source.description == f"--discovery-script {script}"
    with pytest.raises(ConfigError, match="--discovery-script gives the hosts"):
        elastic_plan(PlacementRequest(hostfile="hosts"), settings)
    command = job_command(plan, ["prog"], LaunchSettings(elastic=settings),
                          RunLayout(tmp_path / "run"))
    at = command.argv.index("--host-discovery-script")
    assert command.argv[at + 1] == str(script)  # used as given, not rewritten
    assert elastic_hosts.write_discovery(tmp_path / "run", plan, settings) == script
    assert not (tmp_path / "run" / elastic_hosts.SCRIPT_NAME).exists()


# -- the interface horovodrun gets -----------------------------------------------------------------
def test_remote_hosts_get_the_launchers_interface_towards_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without any --network-interface horovodrun waits for two hosts before it starts."""
    monkeypatch.setattr(job, "rendezvous_address", lambda hosts: "10.9.0.1")
    monkeypatch.setattr(elastic_hosts, "interface_towards",
                        lambda address: "br9" if address == "10.9.0.1" else None)
    plan = make_plan(PlacementRequest(hosts="node1:1", np=1))
    settings = LaunchSettings(elastic=ElasticSettings(min_np=1, max_np=2))
    argv = job_command(plan, ["prog"], settings, RunLayout(tmp_path)).argv
    assert argv[argv.index("--network-interface") + 1] == "br9"
    given = LaunchSettings(elastic=settings.elastic,
                           tuning=job.HorovodTuning(network_interface="eth1"))
    argv = job_command(plan, ["prog"], given, RunLayout(tmp_path)).argv
    assert argv.count("--network-interface") == 1
    assert argv[argv.index("--network-interface") + 1] == "eth1"


# -- the command -----------------------------------------------------------------------------------
def test_launch_elastic_bad_input_is_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    prog = ["--", sys.executable, "x.py"]
    for args, message in (
            (["--elastic", "-H", "localhost:2"], "--elastic needs --min-np"),
            (["--elastic", "-H", "localhost:2", "--min-np", "3"],
             "--min-np 3 is above the 2 slot(s) on offer"),
            (["--min-np", "1"], "--min-np needs --elastic"),
            (["--discovery-script", "d.sh"], "--discovery-script needs --elastic")):
        result = runner.invoke(main, ["launch", *args, "--run-dir", str(tmp_path), *prog])
        assert result.exit_code != 0, result.output
        assert f"error: {message}" in result.output and "Traceback" not in result.output


def test_launch_elastic_dry_run_shows_the_elastic_settings(tmp_path: Path) -> None:
    hostfile = tmp_path / "hosts"
    hostfile.write_text("localhost slots=2\n")
    result = CliRunner().invoke(main, [
        "launch", "--elastic", "--min-np", "1", "--max-np", "3", "--hostfile", str(hostfile),
        "--elastic-timeout", "45", "--run-dir", str(tmp_path / "run"), "--dry-run",
        "--", sys.executable, "x.py"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert ("elastic: 1 to 3 ranks, starting with 2; below --min-np it waits 45 s "
            "(--elastic-timeout)") in out
    assert (f"host discovery: {tmp_path / 'run' / elastic_hosts.SCRIPT_NAME} (written at "
            f"launch; re-reads {hostfile} on every call") in out
    last = out.strip().splitlines()[-1]
    assert "--min-np 1 --max-np 3 --host-discovery-script" in last
    assert "--network-interface lo" in last and last.endswith(f"-- {sys.executable} x.py")


def test_elastic_ranks_print_unbuffered_unless_the_user_chose() -> None:
    """horovodrun forwards a rank's output through a pipe: a Python script would hold its
    prints until it exits."""
    from hvdtrain.launch.rank_wrapper import child_environment

    assert child_environment({"HOROVOD_ELASTIC": "1"})["PYTHONUNBUFFERED"] == "1"
    assert child_environment({"HOROVOD_ELASTIC": "1", "PYTHONUNBUFFERED": ""})[
        "PYTHONUNBUFFERED"] == ""
    assert "PYTHONUNBUFFERED" not in child_environment({})
