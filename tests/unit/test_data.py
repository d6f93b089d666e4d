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
    with pytest.raises(DataError, match="unknown data set 'nope'"):
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
