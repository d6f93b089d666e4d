"""A corpus of bad inputs, each run as the real command (``python -m hvdtrain train -np 2``).

Every mistake a user can make with data, model, options, checkpoint or hosts must be caught
on the launching host, before any rank starts: a non-zero exit code of its kind (2 options,
3 hosts, 6 data, 7 checkpoint), one error line (plus a hint), no traceback, in seconds, and
the run directory exactly as it was (no ``ranks/``, no ``launch.json``, no file touched).

The cases run once, in parallel threads (most take well under a second; the few that build a
user's model start the framework in a subprocess), and each is then asserted on its own.
No ML framework is imported by this file or by the command under test.
"""

from __future__ import annotations

import importlib.util
import json
import pickle
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.jobs import clean_env

REPO = Path(__file__).resolve().parents[2]
HOSTFILES = REPO / "hostfiles"
FORMAT = "hvdtrain-checkpoint-1"
TIME_LIMIT = 30.0  # seconds for one case
MAX_STDERR_LINES = 3
SENTINEL = b"results of an earlier run: must survive byte for byte\n"


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]
    exit_code: int
    fragment: str  # in the error line
    files: dict[str, str | bytes | Callable[[Path], None]] = field(default_factory=dict)
    run_dir_files: dict[str, Callable[[Path], None]] = field(default_factory=dict)
    needs: str | None = None  # a framework the launcher's model check runs (else: skipped)


def _npz(**arrays: np.ndarray) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        with path.open("wb") as handle:
            np.savez(handle, **arrays)
    return write


def _rows(n: int = 12, features: int = 2) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, features))


def _with(x: np.ndarray, at: tuple[int, int], value: float) -> np.ndarray:
    x = x.copy()
    x[at] = value
    return x


def _meta(framework: str, model: str = "mlp", data: str = "breast-cancer") -> dict[str, object]:
    return {"format": FORMAT, "epoch": 1, "best_val_loss": 1.0, "epochs_since_best": 0,
            "rng": None, "config": {"framework": framework, "model": model, "data": data}}


def _tf_checkpoint(framework: str = "tensorflow", model: str = "mlp") -> Callable[[Path], None]:
    """The TensorFlow adapter's format: .npz with a JSON ``meta`` entry (NumPy only)."""
    def write(path: Path) -> None:
        with path.open("wb") as handle:
            np.savez(handle, meta=np.array(json.dumps(_meta(framework, model))),
                     v00000=np.zeros((30, 256), np.float32))
    return write


def _torch_checkpoint(framework: str = "torch", model: str = "mlp", truncate: bool = False,
                      damage: bool = False) -> Callable[[Path], None]:
    """The layout of ``torch.save`` (a zip with ``<name>/data.pkl``), written without torch;
    ``truncate``: cut in half; ``damage``: one byte of the tensor data flipped."""
    def write(path: Path) -> None:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("epoch-0001/data.pkl",
                             pickle.dumps({**_meta(framework, model), "model": {}}, protocol=2))
            archive.writestr("epoch-0001/data/0", b"\0" * 4096)
        data = bytearray(path.read_bytes())
        if truncate:
            data = data[: len(data) // 2]
        if damage:
            data[data.index(b"\0" * 4096) + 100] ^= 0xFF
        path.write_bytes(bytes(data))
    return write


def _text(content: str) -> Callable[[Path], None]:
    return lambda path: path.write_text(content)


CSV_OK_ROWS = "".join(f"{i},{i % 3},{i % 2}\n" for i in range(10))
JSONL_OK = "".join(json.dumps({"text": f"t{i}", "label": i % 2}) + "\n" for i in range(10))
TF_MLP = ("--framework", "tensorflow", "--data", "breast-cancer")
USER = "tests.fixtures.user_models"

CASES = [
    # -- data files ------------------------------------------------------------------------
    Case("csv without the label column", ("--data", "{d.csv}"), 6,
         "d.csv: no label column 'label' (columns: a, b)", {"d.csv": "a,b\n1,2\n3,4\n"}),
    Case("csv with text in a feature", ("--data", "{d.csv}"), 6,
         "d.csv:4: non-numeric value 'abc' in column 'b'",
         {"d.csv": "a,b,label\n1,2,0\n3,4,1\n5,abc,0\n" + CSV_OK_ROWS}),
    Case("csv with a ragged row", ("--data", "{d.csv}"), 6, "d.csv:3: 2 values, header has 3",
         {"d.csv": "a,b,label\n1,2,0\n3,4\n" + CSV_OK_ROWS}),
    Case("csv with NaN in a feature", ("--data", "{d.csv}"), 6, "d.csv:3: column 'a' is NaN",
         {"d.csv": "a,b,label\n1,2,0\nnan,4,1\n" + CSV_OK_ROWS}),
    Case("csv with inf in a feature", ("--data", "{d.csv}"), 6,
         "d.csv:2: column 'b' is infinite", {"d.csv": "a,b,label\n1,-inf,0\n" + CSV_OK_ROWS}),
    Case("csv with a value beyond float32", ("--data", "{d.csv}"), 6,
         "d.csv:2: column 'a' is 1e+39, too large for float32",
         {"d.csv": "a,b,label\n1e39,2,0\n" + CSV_OK_ROWS}),
    Case("empty csv", ("--data", "{d.csv}"), 6, "d.csv: empty", {"d.csv": ""}),
    Case("csv with a header only", ("--data", "{d.csv}"), 6, "at least one data row",
         {"d.csv": "a,b,label\n"}),
    Case("csv with float labels", ("--data", "{d.csv}"), 6,
         "d.csv:3: label '0.5' is not a class id",
         {"d.csv": "a,b,label\n1,2,0\n3,4,0.5\n" + CSV_OK_ROWS}),
    Case("csv with a negative label", ("--data", "{d.csv}"), 6,
         "d.csv:2: label '-1' is negative", {"d.csv": "a,b,label\n1,2,-1\n" + CSV_OK_ROWS}),
    Case("csv with too few rows", ("--data", "{d.csv}"), 6, "d.csv: only 2 samples",
         {"d.csv": "a,b,label\n1,2,0\n3,4,1\n"}),
    Case("npz that is not a zip", ("--data", "{d.npz}"), 6, "d.npz: not a readable .npz file",
         {"d.npz": b"this is not a zip archive"}),
    Case("npz without x", ("--data", "{d.npz}"), 6, "d.npz: needs arrays 'x' and 'y' (has "
         "features, y)", {"d.npz": _npz(features=_rows(), y=np.zeros(12, np.int64))}),
    Case("npz with x and y of different lengths", ("--data", "{d.npz}"), 6,
         "got x (12, 2) and y (11,)", {"d.npz": _npz(x=_rows(), y=np.zeros(11, np.int64))}),
    Case("npz with float labels", ("--data", "{d.npz}"), 6,
         "d.npz: y has dtype float64; it must hold integer class ids",
         {"d.npz": _npz(x=_rows(), y=np.zeros(12))}),
    Case("npz with a negative label", ("--data", "{d.npz}"), 6, "d.npz: y[4] is -2",
         {"d.npz": _npz(x=_rows(), y=np.array([0, 1, 0, 1, -2, 0, 1, 0, 1, 0, 1, 0]))}),
    Case("npz with NaN in x", ("--data", "{d.npz}"), 6, "d.npz: x[7, 1] is NaN",
         {"d.npz": _npz(x=_with(_rows(), (7, 1), np.nan), y=np.arange(12) % 2)}),
    Case("npz with text in x", ("--data", "{d.npz}"), 6, "d.npz: x has dtype <U1",
         {"d.npz": _npz(x=np.array([["a", "b"]] * 12), y=np.arange(12) % 2)}),
    Case("jsonl with a malformed line", ("--data", "{d.jsonl}"), 6,
         "d.jsonl:2: not valid JSON", {"d.jsonl": JSONL_OK[:30] + "\n{oops\n" + JSONL_OK}),
    Case("jsonl with a missing key", ("--data", "{d.jsonl}"), 6,
         "d.jsonl:1: each line needs 'text' and 'label'",
         {"d.jsonl": '{"text": "no label"}\n' + JSONL_OK}),
    Case("empty jsonl", ("--data", "{d.jsonl}"), 6, "d.jsonl: no samples", {"d.jsonl": "\n"}),
    Case("jsonl with a null label", ("--data", "{d.jsonl}"), 6,
         "d.jsonl:1: 'label' must be a class id or a class name, got null",
         {"d.jsonl": '{"text": "x", "label": null}\n' + JSONL_OK}),
    Case("data file this host cannot see", ("--data", "/nonexistent/d.csv"), 6,
         "/nonexistent/d.csv: no such data file"),
    Case("unknown data set", ("--data", "imagenet"), 2, "unknown data set 'imagenet'"),
    # -- models ----------------------------------------------------------------------------
    Case("unknown model name", ("--model", "resnet9000"), 2,
         "--model must be one of mlp, cnn, transformer, got 'resnet9000'"),
    Case("user model in a module that does not exist", ("--model", "no_such_module:make"), 2,
         "cannot import 'no_such_module' (No module named 'no_such_module')"),
    Case("user factory that is not there", ("--model", f"{USER}:nope"), 2,
         f"{USER} has no callable 'nope'", needs="torch"),
    Case("user factory returning a non-model", ("--model", f"{USER}:not_a_model"), 2,
         "the factory returned str, not a torch.nn.Module", needs="torch"),
    Case("user factory that raises", ("--model", f"{USER}:raises", "--data", "breast-cancer"),
         2, "the factory raised ValueError: cannot build for 30 features at "
         "tests/fixtures/user_models.py:", needs="torch"),
    Case("user model with the wrong number of outputs",
         ("--model", f"{USER}:make_torch_wrong_outputs", "--data", "breast-cancer"), 2,
         "output has shape (2, 7) for 2 samples; breast-cancer needs (2, 1)", needs="torch"),
    Case("user model that cannot take the data",
         ("--model", f"{USER}:make_torch_for_ten_features", "--data", "breast-cancer"), 2,
         "the model fails on a batch of breast-cancer (RuntimeError: mat1 and mat2 shapes",
         needs="torch"),
    Case("user factory that kills its process", ("--model", f"{USER}:exits_hard"), 2,
         "the model check crashed (exit code 3): about to leave without a word",
         needs="torch"),
    Case("cnn on tabular data", ("--model", "cnn", "--data", "breast-cancer"), 2,
         "--model cnn needs image data (e.g. digits); 'breast-cancer' is tabular data"),
    Case("transformer on tabular data", ("--model", "transformer", "--data", "{d.csv}"), 2,
         "--model transformer needs text data", {"d.csv": "a,b,label\n" + CSV_OK_ROWS}),
    Case("mlp on text", ("--model", "mlp", "--data", "{d.jsonl}"), 2,
         "--model mlp needs tabular or image data", {"d.jsonl": JSONL_OK}),
    # -- options ---------------------------------------------------------------------------
    Case("zero epochs", ("--epochs", "0"), 2, "--epochs must be >= 1, got 0"),
    Case("negative lr", ("--lr", "-1"), 2, "--lr must be > 0, got -1.0"),
    Case("infinite lr", ("--lr", "inf"), 2, "--lr must be a finite number, got inf"),
    Case("val fraction of 1.5", ("--val-fraction", "1.5"), 2,
         "--val-fraction must be between 0 and 1 (exclusive), got 1.5"),
    Case("unknown optimizer", ("--optimizer", "rmsprop"), 2, "'rmsprop' is not one of"),
    Case("unknown --on-nonfinite", ("--on-nonfinite", "ignore"), 2, "'ignore' is not one of"),
    Case("YAML file with an unknown key", ("--config", "{c.yaml}"), 2,
         "c.yaml: unknown key 'epochz'", {"c.yaml": "epochs: 2\nepochz: 3\n"}),
    Case("YAML file with a bad value", ("--config", "{c.yaml}"), 2,
         "--batch-size must be >= 1, got 0", {"c.yaml": "batch-size: 0\n"}),
    # -- resume ----------------------------------------------------------------------------
    Case("resume latest in an empty run dir", ("--resume", "latest"), 7,
         "--resume latest: no checkpoint in"),
    Case("resume a path that does not exist", ("--resume", "/nonexistent/epoch-0001.ckpt"), 7,
         "--resume /nonexistent/epoch-0001.ckpt: no such checkpoint file"),
    Case("resume a corrupt checkpoint", ("--data", "breast-cancer", "--resume", "latest"), 7,
         "epoch-0002.ckpt: cannot read checkpoint",
         run_dir_files={"checkpoints/epoch-0001.ckpt": _torch_checkpoint(),
                        "checkpoints/epoch-0002.ckpt": _text("garbage")}),
    Case("resume a truncated checkpoint", ("--data", "breast-cancer", "--resume", "latest"), 7,
         "epoch-0001.ckpt: cannot read checkpoint",
         run_dir_files={"checkpoints/epoch-0001.ckpt": _torch_checkpoint(truncate=True)}),
    Case("resume a checkpoint with a damaged tensor", ("--data", "breast-cancer", "--resume",
                                                       "latest"), 7,
         "epoch-0001.ckpt: cannot read checkpoint (member 'epoch-0001/data/0' is damaged)",
         run_dir_files={"checkpoints/epoch-0001.ckpt": _torch_checkpoint(damage=True)}),
    Case("resume a checkpoint of the other framework", (*TF_MLP, "--resume", "latest"), 7,
         "checkpoint was made with framework='torch', this run has framework='tensorflow'",
         run_dir_files={"checkpoints/epoch-0001.ckpt": _torch_checkpoint()}),
    Case("resume a tensorflow checkpoint with torch",
         ("--data", "breast-cancer", "--resume", "latest"), 7,
         "checkpoint was made with framework='tensorflow', this run has framework='torch'",
         run_dir_files={"checkpoints/epoch-0001.ckpt": _tf_checkpoint()}),
    Case("resume a checkpoint of another model", (*TF_MLP, "--resume", "latest"), 7,
         "checkpoint was made with model='cnn', this run has model='mlp'",
         run_dir_files={"checkpoints/epoch-0003.ckpt": _tf_checkpoint(model="cnn")}),
    Case("a fresh run in a run dir with checkpoints", ("--data", "breast-cancer"), 7,
         "already holds checkpoints of another run",
         run_dir_files={"checkpoints/epoch-0001.ckpt": _torch_checkpoint()}),
    # -- hosts -----------------------------------------------------------------------------
    Case("hostfile that does not exist", ("--hostfile", "/nonexistent/hosts"), 3,
         "/nonexistent/hosts"),
    Case("hostfile with bad slots", ("--hostfile", str(HOSTFILES / "broken" / "bad-slots.txt")),
         3, "bad-slots.txt"),
    Case("more ranks than the hosts have", ("--hosts", "localhost:1", "-np", "2"), 3, ""),
]


@dataclass
class Outcome:
    returncode: int
    stderr: str
    seconds: float
    run_dir: Path
    before: dict[str, bytes]


def _env() -> dict[str, str]:
    return clean_env(("HVDTRAIN_", "HOROVOD_", "OMPI_COMM_WORLD", "PMI_", "PMIX_"),
                     PYTHONPATH=str(REPO))


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _run(case: Case, root: Path) -> Outcome:
    where = root / f"case{CASES.index(case):02d}"
    where.mkdir()
    names = {}
    for name, content in case.files.items():
        path = where / name
        if callable(content):
            content(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        names["{" + name + "}"] = str(path)
    run_dir = where / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_bytes(SENTINEL)
    for name, write in case.run_dir_files.items():
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        write(run_dir / name)
    args = [names.get(a, a) for a in case.args]
    before = _snapshot(run_dir)
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "hvdtrain", "train", "-np", "2",
                           "--run-dir", str(run_dir), *args], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=120)
    return Outcome(done.returncode, done.stderr, time.monotonic() - start, run_dir, before)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    root = tmp_path_factory.mktemp("bad-inputs")
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = pool.map(lambda case: (case.name, _run(case, root)),
                           [case for case in CASES if _available(case)])
        return dict(results)


def test_the_corpus_is_large_and_names_are_unique() -> None:
    assert len(CASES) >= 25
    assert len({c.name for c in CASES}) == len(CASES)


def _available(case: Case) -> bool:
    return case.needs is None or importlib.util.find_spec(case.needs) is not None


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_fails_before_any_rank_starts(case: Case,
                                                outcomes: dict[str, Outcome]) -> None:
    if not _available(case):
        pytest.skip(f"the model check needs {case.needs} on this host")
    outcome = outcomes[case.name]
    err = outcome.stderr
    lines = [line for line in err.splitlines() if line.strip()]
    assert outcome.returncode == case.exit_code, err
    assert "Traceback" not in err, err
    assert len(lines) <= MAX_STDERR_LINES, err
    assert case.fragment in err, err
    assert outcome.seconds < TIME_LIMIT, (outcome.seconds, err)
    # no rank started, nothing written: the run directory is byte for byte as it was
    assert not (outcome.run_dir / "ranks").exists()
    assert not (outcome.run_dir / "launch.json").exists()
    assert _snapshot(outcome.run_dir) == outcome.before


# -- what the loop does with a non-finite step (a fake adapter, one process) ---------------
class _OneRank:
    rank, size, local_rank, local_size = 0, 1, 0, 1

    def allreduce_sum(self, values: np.ndarray, name: str) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)

    def allgather_object(self, value: object) -> list[object]:
        return [value]

    def broadcast_object(self, value: object, root: int = 0) -> object:
        return value


class _Scripted:
    """Losses by (epoch, step); a NaN one comes back as a non-finite step, as a real
    adapter reports it (and does not apply it)."""

    name = "fake"
    fp16_recoveries = 0

    def __init__(self, nan_at: set[tuple[int, int]], params_finite: bool = True,
                 steps: int = 4, accumulation: int = 1, bad_flush: frozenset[int] = frozenset()
                 ) -> None:
        self.comm = _OneRank()
        self.nan_at, self.finite, self.steps = nan_at, params_finite, steps
        self.accumulation, self.bad_flush = accumulation, bad_flush
        self.calls = 0
        self.applied = 0
        self.flushed: list[int] = []  # the epochs whose leftover passes were stepped on

    def train_batch(self, x: np.ndarray, y: np.ndarray, lr: float) -> object:
        from hvdtrain.types import BatchStats

        here = divmod(self.calls, self.steps)
        self.calls += 1
        bad = here in self.nan_at
        self.applied += not bad
        return BatchStats(float("nan") if bad else 0.5, len(y) // 2, len(y), nonfinite=bad)

    def finish_accumulation(self) -> bool | None:
        """At an epoch's end: a step on the passes left over, non-finite in ``bad_flush``."""
        if self.steps % self.accumulation == 0:
            return None
        epoch = self.calls // self.steps - 1
        self.flushed.append(epoch)
        return epoch in self.bad_flush

    def evaluate_batch(self, x: np.ndarray, y: np.ndarray) -> object:
        from hvdtrain.types import BatchStats

        return BatchStats(0.4 * len(y), len(y), len(y))

    def parameters_finite(self) -> bool:
        return self.finite

    def parameter_hash(self) -> str:
        return "h"

    def rng_state(self) -> object:
        return None

    def write_checkpoint(self, path: Path, meta: dict[str, object]) -> None:
        path.write_bytes(json.dumps(meta["epoch"]).encode())


def _fake_run(tmp_path: Path, adapter: _Scripted, **options: object) -> dict[str, object]:
    pytest.importorskip("tensorboardX")  # the event writer of a framework-free run
    pytest.importorskip("tqdm")
    from hvdtrain.config import TrainConfig
    from hvdtrain.training.loop import train
    from hvdtrain.types import Dataset

    x = np.zeros((40, 2), np.float32)
    y = np.zeros(40, np.int64)
    data = Dataset("fake", "tabular", x[:32], y[:32], x[32:], y[32:], 2)
    config = TrainConfig(epochs=3, batch_size=8, run_dir=str(tmp_path), **options)  # type: ignore[arg-type]
    return train(adapter, adapter.comm, config, data, tmp_path)  # type: ignore[arg-type]


def test_stop_raises_at_the_step_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    from hvdtrain.errors import TrainingDivergedError

    adapter = _Scripted(nan_at={(1, 2)})
    with pytest.raises(TrainingDivergedError, match=r"loss became NaN at epoch 2 step 3 \(of 4\)"
                       ) as caught:
        _fake_run(tmp_path, adapter)
    assert caught.value.exit_code == 8 and "lower --lr" in str(caught.value.hint)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "best.ckpt", "epoch-0001.ckpt"]
    assert adapter.calls == 7  # stopped right there


def test_skip_counts_and_keeps_nan_out_of_the_averages(tmp_path: Path) -> None:
    adapter = _Scripted(nan_at={(0, 1), (2, 0), (2, 3)})
    summary = _fake_run(tmp_path, adapter, on_nonfinite="skip")
    assert summary["nonfinite_skips"] == 3 and summary["epochs_run"] == 3
    assert summary["train_loss"] == pytest.approx(0.5 / 8)
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["nonfinite_skips"] for r in rows] == [1, 0, 2]


def test_an_epochs_leftover_passes_step_and_follow_on_nonfinite(tmp_path: Path) -> None:
    """4 steps an epoch at --grad-accumulation 3: each epoch's end steps on the 1 pass left;
    a non-finite one is skipped (counted) or stops the run there."""
    from hvdtrain.errors import TrainingDivergedError

    adapter = _Scripted(nan_at=set(), accumulation=3, bad_flush=frozenset({1}))
    summary = _fake_run(tmp_path / "skip", adapter, on_nonfinite="skip", grad_accumulation=3)
    assert adapter.flushed == [0, 1, 2] and summary["nonfinite_skips"] == 1
    adapter = _Scripted(nan_at=set(), accumulation=3, bad_flush=frozenset({1}))
    with pytest.raises(TrainingDivergedError,
                       match=r"gradient became NaN/inf at epoch 2 step 4 \(of 4\)"):
        _fake_run(tmp_path / "stop", adapter, grad_accumulation=3)
    assert adapter.flushed == [0, 1]


def test_an_epoch_of_nothing_but_skips_ends_the_run(tmp_path: Path) -> None:
    from hvdtrain.errors import TrainingDivergedError

    with pytest.raises(TrainingDivergedError, match="every step of epoch 2 had a non-finite"):
        _fake_run(tmp_path, _Scripted(nan_at={(1, s) for s in range(4)}), on_nonfinite="skip")


def test_no_checkpoint_is_written_with_non_finite_parameters(tmp_path: Path) -> None:
    from hvdtrain.errors import TrainingDivergedError

    with pytest.raises(TrainingDivergedError, match="parameters became NaN/inf in epoch 1"):
        _fake_run(tmp_path, _Scripted(nan_at=set(), params_finite=False))
    assert not (tmp_path / "checkpoints").exists()


def test_a_model_check_that_takes_too_long_is_stopped() -> None:
    from hvdtrain.config import TrainConfig
    from hvdtrain.errors import ConfigError
    from hvdtrain.train_launcher.validate import check_user_model

    config = TrainConfig(model=f"{USER}:make_torch", data="breast-cancer")
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"building the model took longer than 0\.5 s"):
        check_user_model(config, None, timeout=0.5)
    assert time.monotonic() - start < 10
