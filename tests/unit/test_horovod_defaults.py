"""hvdtrain's Horovod defaults (``comm.horovod_defaults``): set only what the user left unset."""

from __future__ import annotations

from hvdtrain.comm import DEFAULT_CYCLE_TIME_MS, horovod_defaults


def test_the_cycle_time_default_fills_an_unset_variable() -> None:
    env: dict[str, str] = {}
    horovod_defaults(env)
    assert env == {"HOROVOD_CYCLE_TIME": DEFAULT_CYCLE_TIME_MS}
    assert float(DEFAULT_CYCLE_TIME_MS) < 1  # below Horovod's own 1 ms, as measured


def test_the_users_cycle_time_and_autotune_win() -> None:
    mine = {"HOROVOD_CYCLE_TIME": "3"}
    horovod_defaults(mine)
    assert mine == {"HOROVOD_CYCLE_TIME": "3"}
    tuned = {"HOROVOD_AUTOTUNE": "1"}
    horovod_defaults(tuned)
    assert tuned == {"HOROVOD_AUTOTUNE": "1"}
