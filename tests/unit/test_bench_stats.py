"""The paired statistics of ``bench train``, its table, and ``--shaped-hosts`` checks (no ranks,
no lab: the functions are pure and the checks come before anything is launched)."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from hvdtrain.benchmarks.lab import HOSTS, check_count, host_names, hosts_up
from hvdtrain.benchmarks.stats import (
    combine_launches,
    paired_ratios,
    rotated,
    scaling_pairs,
    summary,
)
from hvdtrain.commands import main
from hvdtrain.commands.bench import render_train
from hvdtrain.errors import ConfigError


def test_rotation_starts_each_round_one_contender_later() -> None:
    names = ("hvdtrain", "horovod", "ddp")
    orders = [rotated(names, r) for r in range(4)]
    assert orders == [["hvdtrain", "horovod", "ddp"], ["horovod", "ddp", "hvdtrain"],
                      ["ddp", "hvdtrain", "horovod"], ["hvdtrain", "horovod", "ddp"]]
    assert [order[0] for order in orders[:3]] == list(names)  # each is first once
    assert rotated((), 5) == []


def test_paired_ratios_are_speed_ratios_of_the_same_round() -> None:
    # a took 1 s and 2 s, b 2 s and 1 s: a was twice as fast, then half as fast
    assert paired_ratios([1.0, 2.0], [2.0, 1.0]) == [2.0, 0.5]
    with pytest.raises(ValueError, match="unpaired"):
        paired_ratios([1.0], [1.0, 2.0])


def test_summary_of_odd_and_even_counts() -> None:
    assert summary([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert summary([4.0, 1.0, 2.0, 3.0]) == {"median": 2.5, "min": 1.0, "max": 4.0, "n": 4}
    assert summary([7.0]) == {"median": 7.0, "min": 7.0, "max": 7.0, "n": 1}
    with pytest.raises(ValueError):
        summary([])


def test_scaling_pairs_launch_i_with_launch_i() -> None:
    assert scaling_pairs([100.0, 50.0], [160.0, 90.0], 2) == [0.8, 0.9]
    with pytest.raises(ValueError, match="unpaired"):
        scaling_pairs([100.0], [160.0, 90.0], 2)


def _launch(ranks: int, windows: dict[str, list[float]], samples: float = 100.0) -> dict[str, Any]:
    """One launch's result as a rank writes it (``measure``), speeds from the windows."""
    return {"ranks": ranks, "controller": "mpi", "framework": "torch",
            "config": {"features": 128, "hidden": 32, "batch_size": 16, "steps": 2,
                       "rounds": 2},
            "contenders": {name: {"samples_per_second": samples * ranks / sorted(times)[0],
                                  "windows_s": times} for name, times in windows.items()}}


def _two_launches() -> dict[int, list[dict[str, Any]]]:
    return {
        1: [_launch(1, {"hvdtrain": [1.0, 1.0], "horovod": [1.0, 1.0], "ddp": [1.0, 1.0]}),
            _launch(1, {"hvdtrain": [2.0, 2.0], "horovod": [2.0, 2.0], "ddp": [2.0, 2.0]})],
        2: [_launch(2, {"hvdtrain": [1.25, 1.0], "horovod": [1.0, 1.1], "ddp": [1.0, 1.0]}),
            _launch(2, {"hvdtrain": [2.5, 2.5], "horovod": [2.0, 2.5], "ddp": [2.5, 2.0]})],
    }


def test_combine_launches_pairs_rounds_and_launches() -> None:
    merged = combine_launches(_two_launches(), "this host")
    assert sorted(merged) == [1, 2] and merged[2]["link"] == "this host"
    ours = merged[2]["contenders"]["hvdtrain"]
    assert ours["per_launch"] == [200.0, 80.0] and ours["samples_per_second"] == 140.0
    # per launch pair: 200 / (2 × 100) and 80 / (2 × 50)
    assert ours["scaling"] == {"median": 0.9, "min": 0.8, "max": 1.0, "n": 2}
    # per round, horovod's time / ours: 1/1.25, 1.1/1, 2/2.5, 2.5/2.5
    horovod = ours["ratios"]["horovod"]
    assert horovod["n"] == 4 and horovod["min"] == 0.8 and horovod["max"] == 1.1
    assert horovod["median"] == pytest.approx(0.9)
    assert merged[2]["contenders"]["horovod"]["ratios"]["horovod"]["median"] == 1.0
    assert sorted(ours["ratios"]) == ["ddp", "horovod"]
    assert "ratios" not in merged[1]["contenders"]["hvdtrain"]  # only at the N size
    for entry in merged[2]["contenders"].values():
        for stat in (entry["scaling"], *entry["ratios"].values()):
            assert stat["min"] <= stat["median"] <= stat["max"]


def test_combine_launches_at_one_rank_only_has_ratios_and_no_scaling() -> None:
    merged = combine_launches({1: _two_launches()[1]}, "this host")
    entry = merged[1]["contenders"]["hvdtrain"]
    assert "scaling" not in entry and entry["ratios"]["horovod"]["median"] == 1.0


def test_render_train_shows_medians_with_their_spread() -> None:
    by_size: dict[int, dict[str, Any]] = {
        size: {"ranks": size, "controller": "mpi", "framework": "torch", "link": "this host",
               "config": {"features": 128, "hidden": 1024, "batch_size": 256, "steps": 20,
                          "rounds": 3},
               "contenders": {name: {"samples_per_second": 1000.0 * size,
                                     "per_launch": [900.0 * size, 1100.0 * size]}
                              for name in ("hvdtrain", "horovod", "ddp")}}
        for size in (1, 2)}
    stat = {"median": 0.83, "min": 0.8, "max": 0.86, "n": 2}
    for entry in by_size[2]["contenders"].values():
        entry["scaling"] = stat
        entry["ratios"] = {"horovod": {"median": 1.02, "min": 0.97, "max": 1.1, "n": 6},
                           "ddp": {"median": 1.18, "min": 1.01, "max": 1.3, "n": 6}}
    head, about, columns, _rule, *rows = render_train(by_size).splitlines()
    assert "torch training throughput" in head and "median over 2 launch(es)" in head
    assert "median (min–max) of per-round paired ratios over 3 rounds × 2 launches" in about
    assert columns.split()[:3] == ["contender", "1", "rank(s)"]
    assert "scaling eff." in columns and "vs horovod @2" in columns and "vs ddp @2" in columns
    row = next(line for line in rows if line.startswith("hvdtrain"))
    assert "1,000" in row and "2,000" in row
    assert "0.83 (0.80–0.86)" in row
    assert "1.02 (0.97–1.10)" in row and "1.18 (1.01–1.30)" in row


def test_render_train_one_rank_only() -> None:
    merged = combine_launches({1: _two_launches()[1]}, "this host")
    text = render_train(merged)
    assert "scaling eff.: " not in text and "vs horovod @1" in text
    row = next(line for line in text.splitlines() if line.startswith("hvdtrain"))
    assert "1.00 (1.00–1.00)" in row


def test_shaped_host_names_and_counts() -> None:
    assert HOSTS == ("hvdh1", "hvdh2") and host_names(3) == ("hvdh1", "hvdh2", "hvdh3")
    for bad in (0, 1, 4):
        with pytest.raises(ConfigError, match=r"--shaped-hosts must be 2\.\.3"):
            check_count(bad)
    check_count(2)
    check_count(3)
    status = ("[netns] bridge hvdbr0: UP 10.231.0.1/24\n"
              "[netns] hvdh1 10.231.0.11: namespace up, sshd pid 12, processes: 1\n"
              "[netns] hvdh2 10.231.0.12: namespace up, sshd stopped, processes: 0\n")
    assert hosts_up(status) == 2 and hosts_up("[netns] bridge hvdbr0: absent\n") == 0


@pytest.mark.parametrize("command", ["train", "allreduce"])
def test_bad_shaped_hosts_fail_before_any_lab_or_rank(command: str) -> None:
    result = CliRunner().invoke(main, ["bench", command, "--shaped-link", "1gbit",
                                       "--shaped-hosts", "1"])
    assert result.exit_code == 2 and "--shaped-hosts must be 2..3, got 1" in result.output
    result = CliRunner().invoke(main, ["bench", command, "--shaped-hosts", "3"])
    assert result.exit_code == 2 and "only with --shaped-link" in result.output


def test_plain_hvdtrain_is_a_baseline_only_next_to_the_fp16_contender() -> None:
    from hvdtrain.benchmarks.stats import baselines

    assert baselines(["hvdtrain", "horovod", "ddp"]) == ["horovod", "ddp"]
    assert baselines(["hvdtrain", "horovod", "hvdtrain-fp16"]) == ["hvdtrain", "horovod"]
    # --with-dense-embeddings: the same adapter with dense embedding gradients is a baseline
    assert baselines(["hvdtrain", "hvdtrain-dense", "ddp"]) == ["hvdtrain", "hvdtrain-dense",
                                                               "ddp"]


def test_dense_embeddings_contender_is_torch_only() -> None:
    from click.testing import CliRunner

    from hvdtrain.commands import main

    done = CliRunner().invoke(main, ["bench", "train", "--framework", "tensorflow",
                                     "--with-dense-embeddings"])
    assert done.exit_code == 2, done.output
    assert "--with-dense-embeddings is for --framework torch" in done.output
