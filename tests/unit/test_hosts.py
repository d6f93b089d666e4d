"""Hostfile grammar: every accepted form, every error with file:line and text."""

from pathlib import Path

import pytest

from hvdtrain.cluster.hosts import Host, parse_hostfile_text, parse_hosts_string, read_hostfile

HOSTFILES = Path(__file__).resolve().parents[2] / "hostfiles"


def test_all_forms_comments_blank_lines_and_tabs() -> None:
    text = "# header\n\nnode1 slots=4\t# inline\nnode2:2\nnode3\n[fe80::1]:2\nfe80::2 slots=3\n"
    result = parse_hostfile_text(text, "hf")
    assert result.problems == []
    assert [(h.name, h.slots, h.gpus) for h in result.hosts] == [
        ("node1", 4, (0, 1, 2, 3)), ("node2", 2, (0, 1)), ("node3", 1, (0,)),
        ("fe80::1", 2, (0, 1)), ("fe80::2", 3, (0, 1, 2)),
    ]


def test_gpus_extension() -> None:
    result = read_hostfile(HOSTFILES / "gpu-subsets.txt")
    assert result.problems == []
    assert [(h.name, h.slots, h.gpus) for h in result.hosts] == [
        ("gpu-a", 2, (0, 2)), ("gpu-b", 3, (1, 5, 7)), ("gpu-c", 1, (3,)),
    ]


@pytest.mark.parametrize("name", ["single-node.txt", "two-nodes.txt", "mpich-style.txt",
                                  "slurm-like.txt"])
def test_sample_hostfiles_are_valid(name: str) -> None:
    assert read_hostfile(HOSTFILES / name).problems == []


@pytest.mark.parametrize(("name", "expected"), [
    ("empty.txt", ["empty.txt: no hosts"]),
    ("duplicate-host.txt", ["duplicate-host.txt:2: duplicate host 'node1' (first at line 1)"]),
    ("bad-slots.txt", ["bad-slots.txt:1: slots must be a positive integer, got '0'",
                       "bad-slots.txt:2: slots must be a positive integer, got 'two'",
                       "bad-slots.txt:3: slots must be a positive integer, got '-1'"]),
    ("bad-gpus.txt", ["bad-gpus.txt:1: gpus= lists 2 ids but the host has 3 slots",
                      "bad-gpus.txt:2: gpus= repeats an id"]),
    ("unknown-key.txt", ["unknown-key.txt:1: unknown key 'cores'"]),
])
def test_broken_hostfiles_name_file_line_and_text(name: str, expected: list[str]) -> None:
    problems = read_hostfile(HOSTFILES / "broken" / name).problems
    assert len(problems) == len(expected)
    for problem, fragment in zip(problems, expected):
        assert fragment in problem


def test_error_quotes_offending_text() -> None:
    [problem] = parse_hostfile_text("ok slots=1\nbad slots=x\n", "f").problems
    assert problem.startswith("f:2:") and "'bad slots=x'" in problem


def test_more_errors() -> None:
    cases = {
        "a slots=2 max_slots=1": "max_slots=1 is less than slots=2",
        "a:2 slots=2": "slots given both",
        "a slots": "expected key=value",
        "a gpus=0,x": "comma-separated list",
        "bad/host": "invalid host name",
        "[fe80::1": "malformed bracketed IPv6",
    }
    for text, fragment in cases.items():
        problems = parse_hostfile_text(text, "f").problems
        assert problems and fragment in problems[0], (text, problems)


def test_hosts_string() -> None:
    result = parse_hosts_string("h1:2,h2:4,[::1]:1")
    assert result.problems == []
    assert [(h.name, h.slots) for h in result.hosts] == [("h1", 2), ("h2", 4), ("::1", 1)]
    assert parse_hosts_string("h1:2,,h2").problems
    assert "duplicate host" in parse_hosts_string("h1:2,h1:1").problems[0]


def test_missing_file_is_a_problem_not_an_exception(tmp_path: Path) -> None:
    assert "no such hostfile" in read_hostfile(tmp_path / "nope").problems[0]


def test_launcher_name_brackets_ipv6() -> None:
    assert Host("fe80::1", 1, (0,)).launcher_name == "[fe80::1]"
