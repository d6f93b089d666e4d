"""evaluate / predict / export without a framework: the checkpoint's card, the data read for
it (the training run's own split, bit for bit; batches independent of the rank count), the
metrics, the prediction file's format, and the one-line errors before any rank starts.

Checkpoints here are hand-made TensorFlow-layout files (``.npz`` with a JSON ``meta``): the
launching side reads only their metadata, as it does for real ones.
"""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hvdtrain.commands import main
from hvdtrain.config import TrainConfig
from hvdtrain.errors import ConfigError, DataError
from hvdtrain.inference.card import load_card
from hvdtrain.inference.inputs import Batch, Inputs
from hvdtrain.inference.metrics import roc_auc, summarise
from hvdtrain.inference.runner import _Rows
from hvdtrain.training.checkpoint import FORMAT
from hvdtrain.training.datasets import load_dataset


def make_checkpoint(path: Path, data: str = "breast-cancer", framework: str = "tensorflow",
                    seed: int = 42, val_fraction: float = 0.2) -> Path:
    """A checkpoint whose metadata is what training writes for ``data``."""
    dataset = load_dataset(data, seed, val_fraction)
    meta = {
        "format": FORMAT, "epoch": 2,
        "config": TrainConfig(framework=framework, data=data, seed=seed,
                              val_fraction=val_fraction).as_json(),
        "standardisation": None if dataset.mean is None else {
            "mean": dataset.mean.tolist(), "std": dataset.std.tolist()},  # type: ignore[union-attr]
        "dataset": {"name": dataset.name, "kind": dataset.kind,
                    "num_classes": dataset.num_classes, "num_features": dataset.num_features,
                    "image_shape": list(dataset.image_shape) if dataset.image_shape else None},
    }
    with path.open("wb") as handle:
        np.savez(handle, meta=np.array(json.dumps(meta)), v00000=np.zeros(1))
    return path


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return make_checkpoint(tmp_path / "epoch-0002.ckpt")


def test_the_card_says_everything_needed(checkpoint: Path) -> None:
    card = load_card(str(checkpoint.parent))  # a directory: its newest checkpoint
    assert card.path == checkpoint
    assert (card.framework, card.kind, card.num_classes, card.num_features) == (
        "tensorflow", "tabular", 2, 30)
    assert card.class_names == ("0", "1") and card.mean is not None
    assert card.stub().x_train.shape == (0, 30)


@pytest.mark.parametrize("split", ["val", "train"])
def test_the_training_split_comes_back_bit_for_bit(checkpoint: Path, split: str) -> None:
    card = load_card(str(checkpoint))
    data = load_dataset("breast-cancer", 42, 0.2)
    order = np.random.default_rng(42).permutation(569)
    n_val = round(569 * 0.2)
    positions = order[:n_val] if split == "val" else order[n_val:]
    x, y = (data.x_val, data.y_val) if split == "val" else (data.x_train, data.y_train)
    batches = list(Inputs(card, "breast-cancer", split, labels=True).batches(50))
    index = np.concatenate([b.index for b in batches])  # type: ignore[union-attr]
    assert list(index) == sorted(positions)  # input order
    by_position = np.argsort(positions)
    assert np.array_equal(np.concatenate([b.x for b in batches]), x[by_position])  # type: ignore[union-attr]
    assert np.array_equal(np.concatenate([b.y for b in batches]), y[by_position])  # type: ignore[union-attr]


def test_auto_is_val_on_the_training_data_and_all_elsewhere(checkpoint: Path,
                                                            tmp_path: Path) -> None:
    card = load_card(str(checkpoint))
    assert Inputs(card, "breast-cancer").split == "val"
    table = tmp_path / "new.csv"
    table.write_text(",".join(f"f{i}" for i in range(30)) + "\n" + ",".join(["1"] * 30) + "\n")
    assert Inputs(card, str(table)).split == "all"
    with pytest.raises(ConfigError, match="--split val selects from the data"):
        Inputs(card, str(table), "val")


@pytest.mark.parametrize("world", [2, 3])
def test_batches_do_not_depend_on_the_rank_count(checkpoint: Path, world: int) -> None:
    card = load_card(str(checkpoint))
    alone = [b for b in Inputs(card, "breast-cancer", "all").batches(64) if b is not None]

    def shard(rank: int) -> list[Batch]:
        batches = Inputs(card, "breast-cancer", "all").batches(
            64, want=lambda k: k % world == rank)
        return [b for b in batches if b is not None]

    shards = [shard(rank) for rank in range(world)]
    merged = sorted(itertools.chain(*shards), key=lambda b: b.number)
    assert [b.number for b in merged] == [b.number for b in alone]
    for a, b in zip(alone, merged, strict=True):
        assert np.array_equal(a.index, b.index) and np.array_equal(a.x, b.x)


def _csv(path: Path, header: list[str], *rows: list[str]) -> Path:
    path.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")
    return path


def test_csv_problems_name_the_line(checkpoint: Path, tmp_path: Path) -> None:
    card = load_card(str(checkpoint))
    header = [*(f"f{i}" for i in range(30)), "label"]
    good = ["0.1"] * 30
    cases = [
        (_csv(tmp_path / "a.csv", [*header[:-2], "label"], [*good[:-1], "1"]), True,
         r"a.csv:2: 29 features; the checkpoint's model reads 30"),
        (_csv(tmp_path / "b.csv", header, [*good, "1"], [*good, "2"]), True,
         r"b.csv:3: label 2 is outside the trained classes 0..1"),
        (_csv(tmp_path / "c.csv", header, [*good[:-1], "x", "1"]), False,
         r"c.csv:2: non-numeric value 'x' in column 'f29'"),
        (_csv(tmp_path / "d.csv", header, [*good[:-1], "inf", "1"]), False,
         r"d.csv:2: column 'f29' is not a finite float32"),
        (_csv(tmp_path / "e.csv", header[:-1], good), True, r"no label column 'label'"),
    ]
    for path, labels, message in cases:
        with pytest.raises(DataError, match=message):
            Inputs(card, str(path), labels=labels).check()
    # predicting needs no labels: a file without the column is fine
    assert Inputs(card, str(cases[-1][0]), labels=False).check() == 1


def test_text_labels_are_numbered_as_training_numbered_them(tmp_path: Path) -> None:
    table = _csv(tmp_path / "named.csv", ["a", "b", "label"], ["1", "2", "yes"],
                 ["2", "1", "no"], ["3", "3", "yes"], ["4", "0", "no"], ["5", "5", "yes"])
    card = load_card(str(make_checkpoint(tmp_path / "c.ckpt", data=str(table))))
    batch = next(iter(Inputs(card, str(table), "all", labels=True).batches(10)))
    assert batch is not None and list(batch.y) == [1, 0, 1, 0, 1]  # type: ignore[arg-type]


def test_roc_auc_equals_the_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 5, 60).astype(np.float64)  # many ties
    labels = rng.integers(0, 2, 60)
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairs = [(1.0 if p > n else 0.5 if p == n else 0.0) for p in pos for n in neg]
    assert roc_auc(scores, labels) == pytest.approx(sum(pairs) / len(pairs), abs=1e-12)
    assert roc_auc(scores, np.ones(60, dtype=np.int64)) is None


def test_binary_summary() -> None:
    confusion = np.array([[50.0, 10.0], [5.0, 35.0]])  # rows true, columns predicted
    result = summarise(20.0, confusion, ("0", "1"))
    assert result["samples"] == 100 and result["accuracy"] == 0.85 and result["loss"] == 0.2
    assert result["precision"] == 35 / 45 and result["recall"] == 35 / 40
    assert result["f1"] == pytest.approx(2 * (35 / 45) * (35 / 40) / (35 / 45 + 35 / 40))
    assert result["confusion_matrix"] == [[50, 10], [5, 35]]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_prediction_rows(suffix: str) -> None:
    out = io.StringIO()
    rows = _Rows(out, suffix, ("no", "yes, really"))
    probabilities = np.array([[0.25, 0.75], [1 - 1e-8, 1e-8]], dtype=np.float32)
    rows.write(np.array([3, 7]), np.array([1, 0]), probabilities)
    text = out.getvalue()
    if suffix == ".csv":
        assert text.splitlines() == ['index,prediction,prob_no,"prob_yes, really"',
                                     '3,"yes, really",0.25,0.75', "7,no,1.0,1e-08"]
    else:
        first, second = (json.loads(line) for line in text.splitlines())
        assert first == {"index": 3, "prediction": "yes, really", "prob_no": 0.25,
                         "prob_yes, really": 0.75}
        assert np.float32(second["prob_yes, really"]) == probabilities[1, 1]


def _cli(*args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output.strip().splitlines()


def test_bad_requests_are_one_line_before_any_rank(checkpoint: Path, tmp_path: Path) -> None:
    ckpt = str(checkpoint)
    cases = [
        (("evaluate", "--checkpoint", str(tmp_path / "nope.ckpt"), "--data", "digits"), 7,
         "no such file or run directory"),
        (("evaluate", "--checkpoint", ckpt, "--data", "digits"), 6,
         "digits[0]: 64 features; the checkpoint's model reads 30"),
        (("evaluate", "--checkpoint", ckpt, "--data", "synthetic-text"), 6,
         "synthetic-text is text data; the checkpoint's model reads tabular data"),
        (("predict", "--checkpoint", ckpt, "--data", "breast-cancer", "--output",
          str(tmp_path / "missing" / "p.csv")), 2, "does not exist"),
        (("export", "--checkpoint", ckpt, "--format", "onnx", "--output",
          str(tmp_path / "m.onnx")), 2, "--format onnx exports torch checkpoints"),
        (("export", "--checkpoint", ckpt, "--format", "keras", "--output",
          str(tmp_path / "m.h5")), 2, "a Keras file must end in .keras"),
        (("evaluate", "--checkpoint", ckpt, "--data", "breast-cancer", "--batch-size", "0"), 2,
         "--batch-size must be >= 1"),
    ]
    for args, code, message in cases:
        exit_code, lines = _cli(*args)
        assert exit_code == code, (args, lines)
        assert message in lines[0] and lines[0].startswith("hvdtrain: error: "), (args, lines)
        assert all(line.startswith("hvdtrain: ") for line in lines), lines


def test_a_checkpoint_without_the_data_shape_says_so(tmp_path: Path) -> None:
    path = tmp_path / "old.ckpt"
    meta = {"format": FORMAT, "epoch": 1, "config": TrainConfig().as_json()}
    with path.open("wb") as handle:
        np.savez(handle, meta=np.array(json.dumps(meta)), v00000=np.zeros(1))
    code, lines = _cli("evaluate", "--checkpoint", str(path), "--data", "synthetic")
    assert code == 7 and "does not say what data it was trained on" in lines[0]


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_files_stream_memory_does_not_grow_with_the_rows(checkpoint: Path, tmp_path: Path,
                                                         suffix: str) -> None:
    import tracemalloc

    card = load_card(str(checkpoint))
    rng = np.random.default_rng(0)

    def peak(rows: int) -> int:
        x = rng.standard_normal((rows, 30)).astype(np.float32)
        path = tmp_path / f"d{rows}{suffix}"
        if suffix == ".csv":
            np.savetxt(path, np.column_stack([x, rng.integers(0, 2, rows)]), delimiter=",",
                       header=",".join([*(f"f{i}" for i in range(30)), "label"]), comments="",
                       fmt="%.5g")
        else:
            np.savez(path, x=x, y=rng.integers(0, 2, rows))
        tracemalloc.start()
        seen = sum(len(b.index) for b in Inputs(card, str(path), labels=False).batches(256)
                   if b is not None)
        top = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert seen == rows
        return top

    small, large = peak(2_000), peak(40_000)
    # 20x the rows: the whole x of the large file is 4.8 MB; the peak stays near the small one
    assert large < small + 1_000_000, (small, large)


def test_npz_problems_name_the_sample(checkpoint: Path, tmp_path: Path) -> None:
    card = load_card(str(checkpoint))
    x = np.ones((5, 30))
    x[3, 4] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.zeros(5, dtype=np.int64))
    with pytest.raises(DataError, match=r"nan.npz: x\[3\]: feature 4 is .*nan"):
        Inputs(card, str(tmp_path / "nan.npz")).check()
    np.savez(tmp_path / "wide.npz", x=np.ones((5, 31)), y=np.zeros(5, dtype=np.int64))
    with pytest.raises(DataError, match=r"wide.npz: x\[0\]: 31 features"):
        Inputs(card, str(tmp_path / "wide.npz")).check()


def test_every_framework_names_a_predictor_and_every_format_an_exporter() -> None:
    """The catalog's targets exist (importing them loads no framework) and each predictor
    has the methods the rank side calls."""
    import inspect

    from hvdtrain.catalog import EXPORT_FORMATS, FRAMEWORKS
    from hvdtrain.inference.runner import Predictor

    wanted = {n for n in dir(Predictor) if not n.startswith("_")} - {"name"}
    for framework in FRAMEWORKS:
        predictor = FRAMEWORKS.load(framework.name, "predictor")
        assert wanted <= set(dir(predictor)), framework.name
    for fmt in EXPORT_FORMATS:
        assert fmt.framework in FRAMEWORKS
        exporter = EXPORT_FORMATS.load(fmt.name)
        assert list(inspect.signature(exporter).parameters) == [
            "config", "data", "checkpoint", "output"]


def test_help_of_the_new_commands_loads_no_ml_framework() -> None:
    import subprocess
    import sys

    code = ("import sys\nfrom click.testing import CliRunner\nfrom hvdtrain.commands import main\n"
            "for name in ('evaluate', 'predict', 'export'):\n"
            "    assert CliRunner().invoke(main, [name, '--help']).exit_code == 0\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'tensorflow', 'keras', 'horovod', 'numpy', 'onnx')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"
