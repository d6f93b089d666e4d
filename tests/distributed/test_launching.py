"""The four ways users start jobs, and failures that must be reported, never hidden or hung."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.helpers.jobs import hvdtrain, job_env, read_summary, run_job

ALLREDUCE_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import torch
    import horovod.torch as hvd
    hvd.init()
    total = hvd.allreduce(torch.tensor([float(hvd.rank() + 1)]), op=hvd.Sum).item()
    with open(os.path.join(sys.argv[1], f"rank{hvd.rank()}.json"), "w") as f:
        json.dump({"rank": hvd.rank(), "size": hvd.size(), "sum": total}, f)
""")


def test_train_launches_its_own_ranks(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    done = run_job(hvdtrain("train", "-np", "2", "--epochs", "1", "--run-dir", str(run_dir)))
    assert done.returncode == 0, done.stderr
    summary = read_summary(run_dir)
    assert summary["world_size"] == 2 and summary["parameters_identical"] is True
    assert sorted(p.name for p in (run_dir / "logs").iterdir()) == [
        "rank-0.err", "rank-0.out", "rank-1.err", "rank-1.out"]


def test_train_across_hostfile_hosts(tmp_path: Path) -> None:
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text("localhost slots=1\n127.0.0.1 slots=1  # same machine, second 'host'\n")
    run_dir = tmp_path / "run"
    done = run_job(hvdtrain("train", "--hostfile", str(hostfile), "--epochs", "1",
                            "--run-dir", str(run_dir)))
    assert done.returncode == 0, done.stderr
    assert read_summary(run_dir)["world_size"] == 2


def test_under_horovodrun_gloo_runs_as_worker(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    done = run_job(["horovodrun", "-np", "2", "-H", "localhost:2", "--gloo",
                    *hvdtrain("train", "--epochs", "1", "--run-dir", str(run_dir))])
    assert done.returncode == 0, done.stderr
    summary = read_summary(run_dir)
    assert summary["world_size"] == 2 and summary["parameters_identical"] is True
    assert not (run_dir / "ranks").exists()  # no second launch happened inside the ranks


def test_under_mpirun_runs_as_worker(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    done = run_job(["mpirun", "--allow-run-as-root", "-np", "2", "--oversubscribe",
                    "-bind-to", "none",
                    *hvdtrain("train", "--epochs", "1", "--run-dir", str(run_dir))])
    assert done.returncode == 0, done.stderr
    assert read_summary(run_dir)["world_size"] == 2


def test_launch_a_users_own_horovod_script(tmp_path: Path) -> None:
    script = tmp_path / "user.py"
    script.write_text(ALLREDUCE_SCRIPT)
    for launcher in ("mpirun", "horovodrun"):
        out = tmp_path / launcher
        out.mkdir()
        done = run_job(hvdtrain("launch", "-np", "2", "--launcher", launcher,
                                "--run-dir", str(out / "run"), "--",
                                sys.executable, str(script), str(out)))
        assert done.returncode == 0, done.stderr
        results = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
        assert [r["sum"] for r in results] == [3.0, 3.0]
        assert {r["size"] for r in results} == {2}


def test_failing_rank_is_named_and_its_exit_code_kept(tmp_path: Path) -> None:
    script = tmp_path / "fail.py"
    script.write_text(textwrap.dedent("""
        import os, sys, time
        rank = int(os.environ["OMPI_COMM_WORLD_RANK"])
        if rank == 1:
            print("rank 1 cannot go on: disk on fire", file=sys.stderr)
            sys.exit(3)
        time.sleep(120)
    """))
    start = time.monotonic()
    done = run_job(hvdtrain("launch", "-np", "2", "--run-dir", str(tmp_path / "run"), "--",
                            sys.executable, str(script)), timeout=100)
    assert done.returncode == 3
    assert "rank 1 on" in done.stderr and "failed first (exit code 3)" in done.stderr
    assert "disk on fire" in done.stderr
    assert time.monotonic() - start < 60  # rank 0 was stopped, not waited for


def test_hanging_rank_is_stopped_by_the_timeout(tmp_path: Path) -> None:
    script = tmp_path / "hang.py"
    script.write_text("import time\ntime.sleep(10_000)\n")
    done = run_job(hvdtrain("launch", "-np", "2", "--timeout", "8", "--run-dir",
                            str(tmp_path / "run"), "--", sys.executable, str(script)),
                   timeout=90)
    assert done.returncode == 124
    assert "ran past its 8 s timeout" in done.stderr
    assert "ranks still running: [0, 1]" in done.stderr


def test_sigterm_leaves_no_rank_behind(tmp_path: Path) -> None:
    script = tmp_path / "sleep.py"
    script.write_text("import time\ntime.sleep(10_000)\n")
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(hvdtrain("launch", "-np", "2", "--run-dir", str(run_dir), "--",
                                     sys.executable, str(script)),
                            env=job_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(list((run_dir / "ranks").glob("*.start.json"))) < 2:
            assert time.monotonic() < deadline, "ranks never started"
            time.sleep(0.2)
        pids = []
        for path in (run_dir / "ranks").glob("*.start.json"):
            data = json.loads(path.read_text())
            pids += [data["pid"], data["child_pid"]]
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert code == 128 + signal.SIGTERM
    time.sleep(0.5)
    alive = [pid for pid in pids if _alive(pid)]
    assert alive == []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


KERAS3_SCRIPT = textwrap.dedent("""
    # A user's own Horovod + Keras 3 training script, the documented Keras 3 way: the tape and
    # the broadcast get the backing tf.Variables (v.value), as Keras 3 variables have no .ref().
    import hashlib, json, os, sys
    import numpy as np
    import tensorflow as tf
    import keras
    import horovod.tensorflow as hvd

    hvd.init()
    keras.utils.set_random_seed(hvd.rank())  # different on purpose: broadcast must fix it
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(1)])
    optimizer = keras.optimizers.Adam(1e-2 * hvd.size())
    optimizer.build(model.trainable_variables)
    hvd.broadcast_variables([v.value for v in model.variables + optimizer.variables], 0)
    rng = np.random.default_rng(hvd.rank())
    x = rng.standard_normal((256, 8)).astype("float32")
    y = (x.sum(1, keepdims=True) > 0).astype("float32")

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(yb, model(xb)))
        tape = hvd.DistributedGradientTape(tape)
        grads = tape.gradient(loss, [v.value for v in model.trainable_variables])
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    for epoch in range(5):
        for i in range(0, 256, 32):
            loss = step(x[i:i + 32], y[i:i + 32])
    digest = hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest()
    with open(os.path.join(sys.argv[1], f"rank{hvd.rank()}.json"), "w") as f:
        json.dump({"loss": float(loss), "hash": digest, "size": hvd.size()}, f)
""")


def test_launch_a_users_own_keras3_script(tmp_path: Path) -> None:
    script = tmp_path / "keras_user.py"
    script.write_text(KERAS3_SCRIPT)
    done = run_job(hvdtrain("launch", "-np", "2", "--run-dir", str(tmp_path / "run"), "--",
                            sys.executable, str(script), str(tmp_path)), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert results[0]["hash"] == results[1]["hash"]
    assert {r["size"] for r in results} == {2}
    assert results[0]["loss"] < 0.6


def test_ranks_that_do_not_initialise_in_time_are_stopped(tmp_path: Path) -> None:
    # Importing torch and joining Horovod takes longer than half a second here, so the
    # start-up watchdog must fire (the same path a rank stuck connecting to its peers takes).
    done = run_job(hvdtrain("train", "-np", "2", "--start-timeout", "0.5", "--run-dir",
                            str(tmp_path / "run")), timeout=120)
    assert done.returncode == 125
    assert "did not initialise Horovod within 0.5 s" in done.stderr
    assert not (tmp_path / "run" / "summary.json").exists()


def test_silent_ranks_are_stopped_by_the_idle_timeout(tmp_path: Path) -> None:
    script = tmp_path / "quiet.py"
    script.write_text("import time\nprint('working', flush=True)\ntime.sleep(10_000)\n")
    done = run_job(hvdtrain("launch", "-np", "2", "--idle-timeout", "3", "--run-dir",
                            str(tmp_path / "run"), "--", sys.executable, str(script)),
                   timeout=90)
    assert done.returncode == 124
    assert "no rank wrote any output for 3 s" in done.stderr
