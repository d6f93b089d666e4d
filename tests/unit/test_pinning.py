"""Device choice and launcher-mismatch detection, without GPUs."""

from hvdtrain.cluster.hosts import Host
from hvdtrain.cluster.pinning import choose_device, decode_plan, encode_plan
from hvdtrain.cluster.placement import plan_placement

PLAN = decode_plan(encode_plan(plan_placement([Host("a", 2, (0, 2)), Host("b", 2, (1, 3))])))


def test_plan_round_trip() -> None:
    assert PLAN == [("a", 0, 0), ("a", 1, 2), ("b", 0, 1), ("b", 1, 3)]


def test_follows_the_plan_on_gpu_hosts() -> None:
    choice = choose_device(3, 1, ["b"], gpus_visible=4, plan=PLAN)
    assert (choice.kind, choice.index, choice.mismatch) == ("cuda", 3, None)


def test_cpu_fallback_with_one_message() -> None:
    choice = choose_device(1, 1, ["a"], gpus_visible=0, plan=PLAN)
    assert choice.kind == "cpu" and "no GPU" in choice.message and choice.mismatch is None


def test_detects_launcher_placing_ranks_differently() -> None:
    # e.g. mpirun -map-by node: rank 1 lands on host b as local_rank 0
    choice = choose_device(1, 0, ["b"], gpus_visible=4, plan=PLAN)
    assert choice.mismatch is not None and "planned on a as local_rank 1" in choice.mismatch
    assert choice.index == 1  # host b's GPU for its real local_rank 0
    extra = choose_device(9, 0, ["a"], gpus_visible=4, plan=PLAN)
    assert extra.mismatch is not None and "outside the plan" in extra.mismatch


def test_no_plan_uses_local_rank() -> None:
    choice = choose_device(5, 1, ["x"], gpus_visible=2, plan=None)
    assert (choice.kind, choice.index) == ("cuda", 1)
    missing = choose_device(0, 3, ["x"], gpus_visible=2, plan=None)
    assert missing.kind == "cpu" and missing.mismatch
