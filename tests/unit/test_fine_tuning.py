"""Fine-tuning without a framework: pretrained model names and directories, labelled text
files and their label names, the warm-up/decay schedule step by step, the memory estimate."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from hvdtrain.config import TrainConfig, is_user_model
from hvdtrain.data.text import label_ids, label_names, read_labelled_text
from hvdtrain.errors import ConfigError, DataError
from hvdtrain.pretrained import (
    ModelSize,
    check_pretrained,
    hf_cache_snapshot,
    parse_pretrained,
    rank_memory,
)
from hvdtrain.training.loop import step_progress
from hvdtrain.training.sharding import batch_count


def test_names_and_frameworks() -> None:
    model = parse_pretrained("hf:models/bert")
    assert model is not None and model.kind.framework == "torch" and model.spec == "models/bert"
    assert parse_pretrained("keras-hub:p").kind.framework == "tensorflow"  # type: ignore[union-attr]
    assert parse_pretrained("mymodels:make") is None
    assert not is_user_model("hf:x") and is_user_model("mymodels:make")
    with pytest.raises(ConfigError, match="which --framework tensorflow loads"):
        TrainConfig(model="keras-hub:p", framework="torch")
    with pytest.raises(ConfigError, match="give the model's directory"):
        parse_pretrained("hf:")


def test_directory_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match="nor in the Hugging Face cache"):
        check_pretrained("hf:org/missing", "torch")
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"lacks weights \(model.safetensors"):
        check_pretrained("hf:m", "torch")
    (model / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="lacks a tokenizer"):
        check_pretrained("hf:m", "torch")
    (model / "tokenizer.json").write_text("{}")
    assert check_pretrained("hf:m", "torch") == model.resolve()


def test_model_id_in_the_local_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    snapshot = tmp_path / "models--org--tiny" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (tmp_path / "models--org--tiny" / "refs").mkdir()
    (tmp_path / "models--org--tiny" / "refs" / "main").write_text("abc123\n")
    assert hf_cache_snapshot("org/tiny") == snapshot


def test_csv_tsv_and_jsonl_read_alike(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text('text,label,other\n"good, really",pos,1\nbad,neg,2\n')
    (tmp_path / "a.tsv").write_text("text\tlabel\ngood, really\tpos\nbad\tneg\n")
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "good, really", "label": "pos"})
                                      + "\n\n" + json.dumps({"text": "bad", "label": "neg"}))
    for name in ("a.csv", "a.tsv", "a.jsonl"):
        rows = read_labelled_text(tmp_path / name)
        assert rows.texts == ["good, really", "bad"] and rows.labels == ["pos", "neg"]
    assert read_labelled_text(tmp_path / "a.jsonl").where[1].endswith("a.jsonl:3")


def test_sentence_pairs_and_unlabelled(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("q,a,y\nwhere?,here,1\nwho?,me,0\n")
    rows = read_labelled_text(tmp_path / "p.csv", "q", "y", "a")
    assert rows.pairs == ["here", "me"] and rows.labels == ["1", "0"]
    assert read_labelled_text(tmp_path / "p.csv", "q", None).labels is None


@pytest.mark.parametrize("content, message", [
    (b"text,label\nfine,1\n,0\n", r"x.csv:3: 'text' is empty"),
    (b"text,label\nfine,1\n\xff\xfe,0\n", r"x.csv:3: not UTF-8"),
    (b"body,label\nfine,1\n", r"no column 'text' \(--text-column\); its columns are body, label"),
    (b"text,label\n", "no samples"),
    (b"text,label\nfine,\n", r"x.csv:2: the label is empty"),
])
def test_bad_rows_name_file_and_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_labelled_text(path)


def test_label_names_and_ids() -> None:
    assert label_names(["10", "2", "2"], "f") == ("2", "10")  # whole numbers: numeric order
    assert label_names(["pos", "neg"], "f") == ("neg", "pos")
    with pytest.raises(DataError, match="only one class"):
        label_names(["a", "a"], "f")
    assert label_ids(["pos", "neg"], ["f:1", "f:2"], ("neg", "pos")) == [1, 0]
    with pytest.raises(DataError, match="f:2: label 'meh' is not one the model was trained"):
        label_ids(["pos", "meh"], ["f:1", "f:2"], ("neg", "pos"))


def test_linear_warmup_then_decay_step_by_step() -> None:
    """Like transformers' get_linear_schedule_with_warmup: lr·s/w while warming up, then
    lr·(T - s)/(T - w), at every optimizer step s of T."""
    steps_per_epoch, epochs, warm = 10, 3, 6
    config = TrainConfig(lr=1.0, epochs=epochs, lr_schedule="linear", warmup_steps=warm,
                         lr_scaling="none")
    total = steps_per_epoch * epochs
    for step in range(total):
        want = step / warm if step < warm else (total - step) / (total - warm)
        got = config.lr_at(step / steps_per_epoch, 4, steps_per_epoch)
        assert got == pytest.approx(want), step


def test_loop_steps_the_schedule_once_per_optimizer_step() -> None:
    """The loop's lr at each optimizer step, with an epoch's micro-batches (15 per rank) not a
    multiple of --grad-accumulation (2): 8 steps an epoch, the last on the remainder, each at
    transformers' lr for that step."""
    n, size, batch, accumulation, epochs, warm = 455, 2, 16, 2, 2, 3
    config = TrainConfig(lr=1.0, epochs=epochs, lr_schedule="linear", warmup_steps=warm,
                         lr_scaling="none", batch_size=batch, grad_accumulation=accumulation)
    micro = batch_count(n, size, batch)
    per_epoch = math.ceil(micro / accumulation)
    assert (micro, per_epoch) == (15, 8)
    applied = []  # the lr of the pass that applies each step (the last of its accumulation)
    for epoch in range(epochs):
        for step in range(micro):
            if (step + 1) % accumulation == 0 or step + 1 == micro:
                applied.append(config.lr_at(step_progress(
                    epoch, step // accumulation, per_epoch, 0, n), size, per_epoch))
    total = per_epoch * epochs
    assert applied == pytest.approx([s / warm if s < warm else (total - s) / (total - warm)
                                     for s in range(total)])


def test_cosine_and_ratio() -> None:
    config = TrainConfig(lr=2.0, epochs=4, lr_schedule="cosine", warmup_ratio=0.25,
                         lr_scaling="none")
    assert config.lr_at(0.5, 1) == pytest.approx(1.0)  # half way through the warm-up epoch
    assert config.lr_at(1.0, 1) == pytest.approx(2.0)
    assert config.lr_at(2.5, 1) == pytest.approx(1.0)  # half way through the decay
    assert config.lr_at(4.0, 1) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ConfigError, match="not both"):
        TrainConfig(warmup_steps=3, warmup_ratio=0.1)


def test_memory_estimate_counts_each_part() -> None:
    size = ModelSize(parameters=110_000_000, trainable=110_000_000, hidden=768, layers=12)
    parts = rank_memory(size, batch_size=32, max_length=128, precision="fp32")
    assert parts["weights"] == 440_000_000 and parts["optimizer"] == 880_000_000
    # BERT-base at 32 x 128 in fp32: activations are a few GiB, as measured by others
    assert 1 * 2**30 < parts["activations"] < 8 * 2**30
    half = rank_memory(size, 32, 128, "bf16")["activations"]
    assert math.isclose(half * 2, parts["activations"], rel_tol=0.01)


def test_each_ranks_tokenized_share_goes_back_in_file_order() -> None:
    import numpy as np

    from hvdtrain.training.text_data import interleave

    whole = np.arange(7 * 3 * 4, dtype=np.int32).reshape(7, 3, 4)
    parts = [whole[0::2], whole[1::2, :, :3]]  # rank 1's rows were shorter
    got = interleave(parts, 7)
    assert got.shape == (7, 3, 4)
    assert np.array_equal(got[0::2], whole[0::2])
    assert np.array_equal(got[1::2, :, :3], whole[1::2, :, :3]) and not got[1::2, :, 3].any()
