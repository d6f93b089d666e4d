"""Data sets, user files and sharding (NumPy and scikit-learn only)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hvdtrain.errors import DataError
from hvdtrain.training.datasets import load_dataset
from hvdtrain.training.sharding import eval_shard, shard_batches


@pytest.mark.parametrize(("n", "size", "batch"), [(100, 2, 8), (101, 3, 7), (12288, 2, 64),
                                                  (5, 4, 2)])
def test_sharding_disjoint_complete_equal_steps(n: int, size: int, batch: int) -> None:
    shards = [shard_batches(n, r, size, batch, seed=3) for r in range(size)]
    assert len({len(s) for s in shards}) == 1  # every rank runs the same number of steps
    used = np.concatenate([b for s in shards for b in s])
    assert sorted(used.tolist()) == list(range(n))  # each sample exactly once per epoch


def test_two_ranks_step_k_is_one_rank_batch_k() -> None:
    two = [shard_batches(256, r, 2, 16, seed=0) for r in (0, 1)]
    one = shard_batches(256, 0, 1, 32, seed=0)
    for k, batch in enumerate(one):
        assert sorted(np.concatenate([two[0][k], two[1][k]]).tolist()) == sorted(batch.tolist())


def test_eval_shards_cover_once() -> None:
    parts = [eval_shard(11, r, 3) for r in range(3)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(11))


def test_builtin_sets_are_deterministic_and_standardised() -> None:
    a = load_dataset("synthetic", seed=1, val_fraction=0.25)
    b = load_dataset("synthetic", seed=1, val_fraction=0.25)
    assert np.array_equal(a.x_train, b.x_train) and a.num_classes == 2
    assert a.x_train.shape == (12288, 128)
    assert np.allclose(a.x_train.mean(axis=0), 0, atol=1e-4)
    digits = load_dataset("digits", seed=0, val_fraction=0.2)
    assert digits.num_classes == 10 and digits.image_shape == (1, 8, 8)
    cancer = load_dataset("breast-cancer", seed=0, val_fraction=0.2)
    assert cancer.num_features == 30
    text = load_dataset("synthetic-text", seed=0, val_fraction=0.2)
    assert text.kind == "text" and text.x_train.dtype == np.int64


def test_user_files(tmp_path: Path) -> None:
    csv = tmp_path / "d.csv"
    csv.write_text("a,b,target\n1,2,yes\n3,4,no\n5,6,yes\n7,8,no\n9,1,yes\n")
    data = load_dataset(str(csv), 0, 0.2, label_column="target")
    assert data.num_features == 2 and data.num_classes == 2
    npz = tmp_path / "d.npz"
    np.savez(npz, x=np.random.rand(20, 3, 2), y=np.arange(20) % 3)
    assert load_dataset(str(npz), 0, 0.2).num_features == 6
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": f"t{i}", "label": i % 2}) for i in range(10)))
    assert load_dataset(str(jsonl), 0, 0.2).kind == "text"


@pytest.mark.parametrize(("name", "content", "fragment"), [
    ("a.csv", "a,b\n1,2\n", "no label column 'label'"),
    ("b.csv", "a,label\n1,0\nx,1\n", "b.csv:3: non-numeric"),
    ("c.csv", "a,label\n1,0\n1\n", "c.csv:3: 1 values, header has 2"),
    ("d.csv", "", "needs a header row"),
    ("e.jsonl", '{"text": "x"}\n', "e.jsonl:1: each line needs 'text' and 'label'"),
    ("f.jsonl", "{not json\n", "f.jsonl:1: not valid JSON"),
    ("g.npz", "not a zip", "not a readable .npz"),
])
def test_bad_files_name_the_file_and_problem(tmp_path: Path, name: str, content: str,
                                             fragment: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=fragment.replace("(", r"\(")):
        load_dataset(str(path), 0, 0.2)


def test_unknown_and_missing() -> None:
    from hvdtrain.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown data set 'nope'"):  # an option's value
        load_dataset("nope", 0, 0.2)
    with pytest.raises(DataError, match="no such data file"):
        load_dataset("/missing.csv", 0, 0.2)


@pytest.mark.parametrize(("model", "data", "fragment"), [
    ("transformer", "synthetic", "needs text data"),
    ("mlp", "synthetic-text", "cannot read text"),
    ("cnn", "breast-cancer", "needs image data"),
])
def test_model_and_data_must_fit(model: str, data: str, fragment: str) -> None:
    from hvdtrain.errors import ConfigError
    from hvdtrain.frameworks.models import check_model_fits

    with pytest.raises(ConfigError, match=fragment):
        check_model_fits(model, load_dataset(data, 0, 0.2))
    check_model_fits("cnn", load_dataset("digits", 0, 0.2))  # fits: no error


def test_user_factory_must_return_the_frameworks_model_type() -> None:
    from hvdtrain.errors import ConfigError
    from hvdtrain.frameworks.models import build_user_model

    data = load_dataset("breast-cancer", 0, 0.2)
    with pytest.raises(ConfigError, match=r"returned str, not a keras\.Model"):
        build_user_model("tests.fixtures.user_models:not_a_model", data, int, "keras.Model")
    with pytest.raises(ConfigError, match="cannot import 'no_such_module'"):
        build_user_model("no_such_module:make", data, int, "x")


def test_the_ranks_loader_rejects_non_finite_values_naming_row_and_column(
        tmp_path: Path) -> None:
    csv = tmp_path / "d.csv"
    csv.write_text("a,b,label\n" + "".join(f"{i},{i},{i % 2}\n" for i in range(8))
                   + "1,inf,0\n")
    with pytest.raises(DataError, match=r"d\.csv:10: column 'b' is infinite"):
        load_dataset(str(csv), 0, 0.2)
    npz = tmp_path / "d.npz"
    x = np.ones((8, 2, 3))
    x[5, 1, 2] = np.nan
    np.savez(npz, x=x, y=np.arange(8) % 2)
    with pytest.raises(DataError, match=r"d\.npz: x\[5, 1, 2\] is NaN"):
        load_dataset(str(npz), 0, 0.2)


@pytest.mark.parametrize("order", ["C", "F"])
def test_npz_streaming_check_finds_the_same_value_as_loading(tmp_path: Path,
                                                             order: str) -> None:
    from hvdtrain.data.npy import npz_headers, open_npz, scan_member

    x = np.asarray(np.random.default_rng(0).normal(size=(50, 7)), order=order)
    x[33, 4] = -np.inf
    path = tmp_path / "d.npz"
    np.savez_compressed(path, x=x, y=np.arange(50) % 3)
    with open_npz(path) as archive:
        header = npz_headers(path, archive)["x"]
        assert header.fortran_order == (order == "F")
        with pytest.raises(DataError, match=r"x\[33, 4\] is infinite"):
            scan_member(path, archive, "x", header, keep=False, chunk_bytes=40)  # many chunks
    with pytest.raises(DataError, match=r"x\[33, 4\] is infinite"):
        load_dataset(str(path), 0, 0.2)


def test_npz_check_streams_and_keeps_y(tmp_path: Path) -> None:
    from hvdtrain.training.datasets import check_npz_file, inspect_npz

    path = tmp_path / "d.npz"
    np.savez(path, x=np.ones((20, 4), np.float64), y=(np.arange(20) % 4).astype(np.uint8))
    assert inspect_npz(path) == (20, (4,))
    check_npz_file(str(path), 0, 0.2, "label")
    tiny = tmp_path / "tiny.npz"
    np.savez(tiny, x=np.ones((3, 4)), y=np.arange(3))
    with pytest.raises(DataError, match=r"tiny\.npz: only 3 samples"):
        check_npz_file(str(tiny), 0, 0.2, "label")


@pytest.mark.parametrize(("labels", "classes"), [
    (["0", "1", "2", "1"], [0, 1, 2, 1]),
    (["1.0", "0.0", "1", "0"], [1, 0, 1, 0]),  # integral floats are class ids
    (["yes", "no", "yes", "maybe"], [2, 1, 2, 0]),  # names, in sorted order
])
def test_labels(labels: list[str], classes: list[int]) -> None:
    from hvdtrain.data.schema import labels_as_ints

    assert labels_as_ints(labels, [f"f:{i}" for i in range(len(labels))]).tolist() == classes


def test_jsonl_text_must_be_a_string(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok", "label": 0}\n{"text": 5, "label": 1}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: 'text' must be a string, got int"):
        load_dataset(str(path), 0, 0.2)


def test_huge_values_that_overflow_standardisation(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.full((10, 2), 3e38, np.float32), y=np.arange(10) % 2)
    with pytest.raises(DataError, match="feature 0 is too large to standardise"):
        load_dataset(str(path), 0, 0.2)


def _torch_layout(path: Path, payload: object) -> None:
    import pickle
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x/data.pkl", pickle.dumps(payload, protocol=2))


def test_checkpoint_meta_without_any_framework(tmp_path: Path) -> None:
    import subprocess
    import sys
    from collections import OrderedDict

    from hvdtrain.training.checkpoint import read_checkpoint_meta

    meta = {"format": "hvdtrain-checkpoint-1", "epoch": 3, "config": {"framework": "torch"}}
    torch_like = tmp_path / "t.ckpt"
    _torch_layout(torch_like, {**meta, "model": OrderedDict(w=[1.0]), "rng": [b"x"]})
    assert read_checkpoint_meta(torch_like) == meta
    tf_like = tmp_path / "f.ckpt"
    with tf_like.open("wb") as handle:
        np.savez(handle, meta=np.array(json.dumps(meta)), v00000=np.zeros(3))
    assert read_checkpoint_meta(tf_like) == meta
    code = ("import sys\nfrom pathlib import Path\n"
            "from hvdtrain.training.checkpoint import read_checkpoint_meta\n"
            f"read_checkpoint_meta(Path({str(torch_like)!r}))\n"
            f"read_checkpoint_meta(Path({str(tf_like)!r}))\n"
            "print(sorted(m for m in ('torch', 'tensorflow') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"  # no framework imported to read either


def test_checkpoint_meta_reader_runs_nothing_from_the_file(tmp_path: Path) -> None:
    """A pickle that would call os.system on load: the reader never imports or calls it."""
    import os

    from hvdtrain.errors import CheckpointError
    from hvdtrain.training.checkpoint import read_checkpoint_meta

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return os.system, (f"touch {marker}",)

    path = tmp_path / "evil.ckpt"
    _torch_layout(path, Evil())
    with pytest.raises(CheckpointError, match="not an hvdtrain checkpoint"):
        read_checkpoint_meta(path)
    _torch_layout(path, {"format": "hvdtrain-checkpoint-1", "model": Evil()})
    assert read_checkpoint_meta(path) == {"format": "hvdtrain-checkpoint-1"}
    assert not marker.exists()


def test_data_only_the_ranks_hosts_have_is_checked_by_them(tmp_path: Path) -> None:
    from hvdtrain.config import TrainConfig
    from hvdtrain.train_launcher.validate import validate_run

    config = TrainConfig(data=str(tmp_path / "on-the-workers.csv"))
    notes = validate_run(config, tmp_path, data_may_be_elsewhere=True)
    assert notes == [f"{config.data} is not on this host: the ranks check it where they run"]
    with pytest.raises(DataError, match="no such data file"):  # a rank runs here: must exist
        validate_run(config, tmp_path)
