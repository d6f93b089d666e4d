"""The CLI through Click's runner and as a real subprocess: help, plan, hosts check, config."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from hvdtrain.commands import main

HOSTFILES = Path(__file__).resolve().parents[2] / "hostfiles"
HEAVY = ("torch", "tensorflow", "horovod", "keras", "numpy")


def test_importing_cli_and_every_help_loads_no_ml_framework() -> None:
    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom hvdtrain.commands import main\n"
        "r = CliRunner()\n"
        "for args in ([], ['train'], ['launch'], ['plan'], ['hosts'], ['hosts', 'check'],"
        " ['env'], ['doctor']):\n"
        "    res = r.invoke(main, [*args, '--help'])\n"
        "    assert res.exit_code == 0, (args, res.output)\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {HEAVY!r}]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_plan_json() -> None:
    result = CliRunner().invoke(main, ["plan", "--hostfile", str(HOSTFILES / "gpu-subsets.txt"),
                                       "-np", "4", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["size"] == 4
    assert plan["source"].startswith("hostfile ")
    assert plan["hosts"][0] == {"host": "gpu-a", "slots": 2, "gpus": [0, 2]}
    assert plan["ranks"][3] == {"rank": 3, "host": "gpu-b", "local_rank": 1, "local_size": 2,
                                "cross_rank": 1, "cross_size": 2, "gpu": 5}
    assert plan["commands"]["horovodrun"][:5] == ["horovodrun", "-np", "4", "-H",
                                                  "gpu-a:2,gpu-b:2"]
    assert plan["commands"]["mpirun"][0] == "mpirun"


def test_plan_table_names_its_source_and_commands() -> None:
    result = CliRunner().invoke(main, ["plan", "--hosts", "a:2,b:1", "--exclude", "a:1"])
    assert result.exit_code == 0, result.output
    assert "source: --hosts a:2,b:1" in result.output
    assert "[horovodrun] " in result.output
    assert "horovodrun -np 2 -H a:1,b:1" in result.output


@pytest.mark.parametrize("args", [
    ["plan", "--hostfile", str(HOSTFILES / "broken" / "bad-slots.txt")],
    ["plan", "--hosts", "a:2", "-np", "3"],
    ["plan", "--hosts", "a:2", "--include", "zzz"],
    ["plan", "--hostfile", "/nonexistent"],
])
def test_bad_input_is_one_clean_error(args: list[str]) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 3
    assert "Traceback" not in result.output
    assert result.output.startswith("hvdtrain: error: ")


def test_hosts_check_lists_all_problems() -> None:
    result = CliRunner().invoke(main, ["hosts", "check", str(HOSTFILES / "broken" /
                                                             "bad-slots.txt")])
    assert result.exit_code == 3
    assert result.output.count("error: ") == 3
    assert "3 problem(s)" in result.output
    good = CliRunner().invoke(main, ["hosts", "check", str(HOSTFILES / "two-nodes.txt")])
    assert good.exit_code == 0 and "OK; 2 valid host(s), 8 slot(s)" in good.output


def test_plan_and_hosts_check_are_fast() -> None:
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "hvdtrain", "hosts", "check",
                    str(HOSTFILES / "two-nodes.txt")], check=True, capture_output=True)
    assert time.monotonic() - start < 5  # generous: a cold interpreter on a shared machine


def test_config_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("hosts: a:4\nnp: 3\n")
    args = ["plan", "--config", str(config), "--json"]
    assert json.loads(CliRunner().invoke(main, args).output)["size"] == 3
    monkeypatch.setenv("HVDTRAIN_NP", "2")
    assert json.loads(CliRunner().invoke(main, args).output)["size"] == 2
    assert json.loads(CliRunner().invoke(main, [*args, "-np", "1"]).output)["size"] == 1


def test_config_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("epochz: 3\n")
    result = CliRunner().invoke(main, ["train", "--config", str(config)])
    assert result.exit_code == 2
    assert f"{config}: unknown key 'epochz'" in result.output


def test_fresh_run_refuses_a_run_dir_with_checkpoints(tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    (checkpoints / "epoch-0003.ckpt").write_bytes(b"precious")
    result = CliRunner().invoke(main, ["train", "-np", "2", "--run-dir", str(tmp_path)])
    assert result.exit_code == 7  # CheckpointError
    assert "already holds checkpoints of another run" in result.output
    assert "--resume latest" in result.output
    assert (checkpoints / "epoch-0003.ckpt").read_bytes() == b"precious"


def test_train_dry_run_shows_plan_and_command() -> None:
    result = CliRunner().invoke(main, ["train", "-np", "2", "--launcher", "horovodrun",
                                       "--controller", "gloo", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "source: local host, -np 2" in result.output
    assert "horovodrun -np 2 -H localhost:2 --gloo" in result.output
    assert "horovodrun -np 2" in result.output.strip().splitlines()[-1]  # the command last
    assert "each host's rank wrapper adds: " in result.output  # what no command line shows


def test_dry_run_names_the_allreduce_rules_only_for_open_mpi_across_hosts() -> None:
    from hvdtrain.launch.rank_wrapper import what_it_adds

    system = {"HVDTRAIN_ALLOCATOR": "system"}
    assert what_it_adds(system, hosts=1, open_mpi=True) == [
        "glibc malloc (HVDTRAIN_ALLOCATOR=system)"]
    assert any("Open MPI allreduce" in a and "recursive doubling on 2 ranks, the ring on 3+"
               in a for a in what_it_adds(system, hosts=3, open_mpi=True))
    assert not any("Open MPI" in a for a in what_it_adds(system, hosts=3, open_mpi=False))
    mine = {**system, "OMPI_MCA_coll_tuned_allreduce_algorithm": "6"}
    assert not any("Open MPI" in a for a in what_it_adds(mine, hosts=3, open_mpi=True))


@pytest.mark.parametrize(("data", "fragment", "code"), [
    ("/missing.csv", "/missing.csv: no such data file", 6),  # DataError
    ("imagenet", "unknown data set 'imagenet'", 2),  # an option's value: ConfigError
])
def test_bad_data_fails_before_any_rank_starts(tmp_path: Path, data: str,
                                               fragment: str, code: int) -> None:
    result = CliRunner().invoke(main, ["train", "-np", "2", "--data", data,
                                       "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == code
    assert f"hvdtrain: error: {fragment}" in result.output
    assert not (tmp_path / "run").exists()


def test_bad_model_fails_before_any_rank_starts(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["train", "--model", "resnet9000",
                                       "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "--model must be one of" in result.output and "resnet9000" in result.output


@pytest.mark.parametrize(("program", "fragment"), [
    ("/no/such/program", "'/no/such/program' was not found"),
    ("no-such-command-anywhere", "'no-such-command-anywhere' was not found on PATH"),
    (__file__, "is not executable"),
])
def test_launch_checks_its_program_before_any_rank(tmp_path: Path, program: str,
                                                   fragment: str) -> None:
    result = CliRunner().invoke(main, ["launch", "-np", "2", "--run-dir", str(tmp_path / "r"),
                                       "--", program])
    assert result.exit_code == 4, result.output
    assert result.output.startswith("hvdtrain: error: ") and fragment in result.output
    assert not (tmp_path / "r").exists()
