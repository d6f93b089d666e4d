"""Pretrained language models named on the command line: ``hf:PATH`` and ``keras-hub:PATH``.

A user fine-tunes a checkpoint they already have on disk. This module says, without importing
any framework, what such a name means: which framework loads it, where its directory is (a
path, or a model id already in the local Hugging Face cache), and whether that directory holds
what loading needs (a config, weights, a tokenizer). The launcher runs these checks before any
rank starts, so a missing file is one line naming what was looked for and where, never a
traceback from ``from_pretrained`` on every rank. Nothing is ever downloaded: the ranks load
with offline mode forced (``OFFLINE_ENV``).

It also holds the fine-tuning defaults (small lr, warm-up, AdamW), which apply to these models
wherever the user did not choose.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hvdtrain.errors import ConfigError

# Set in every process that loads a pretrained model: the Hugging Face libraries then never
# reach for the network, even for a model id.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "KAGGLE_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
               "TRANSFORMERS_VERBOSITY": "error"}


@dataclass(frozen=True)
class PretrainedKind:
    prefix: str  # as written before the ':'
    framework: str  # the --framework that loads it
    what: str  # in messages
    # "module:attr" of the framework's ``encode_texts(name, texts, pairs, max_length)``, which
    # tokenizes with the model's own tokenizer; imported on use
    encoder: str
    # "module:attr" of ``describe(model) -> ModelSize`` for the memory estimate
    describer: str


KINDS = {
    "hf": PretrainedKind("hf", "torch", "a Hugging Face transformers model",
                         "hvdtrain.frameworks.torch.pretrained:encode_texts",
                         "hvdtrain.frameworks.torch.pretrained:describe"),
    "keras-hub": PretrainedKind("keras-hub", "tensorflow", "a KerasHub preset",
                                "hvdtrain.frameworks.tensorflow.pretrained:encode_texts",
                                "hvdtrain.frameworks.tensorflow.pretrained:describe"),
}

# The usual fine-tuning recipe, used for a pretrained model wherever the user chose nothing
# (defaults < these < file < environment < flags).
FINE_TUNING_DEFAULTS: dict[str, object] = {
    "lr": 5e-5, "optimizer": "adamw", "weight_decay": 0.01, "lr_schedule": "linear",
    "warmup_ratio": 0.1, "epochs": 3, "batch_size": 16, "lr_scaling": "none",
}


@dataclass(frozen=True)
class PretrainedModel:
    kind: PretrainedKind
    spec: str  # what the user wrote after the prefix

    @property
    def name(self) -> str:
        return f"{self.kind.prefix}:{self.spec}"

    def directory(self) -> Path:
        """The model's directory: the path as given, or a model id in the local Hugging Face
        cache. ``ConfigError`` naming both places when it is in neither."""
        path = Path(self.spec).expanduser()
        if path.is_dir():
            return path.resolve()
        if self.kind.prefix == "hf" and not path.is_absolute():
            cached = hf_cache_snapshot(self.spec)
            if cached is not None:
                return cached
            where = f"{path.resolve()} (no such directory), nor in the Hugging Face cache " \
                    f"{hf_cache_root()}"
        else:
            where = f"{path.resolve()} (no such directory)"
        raise ConfigError(f"--model {self.name}: {self.kind.what} was looked for at {where}",
                          hint="nothing is downloaded: give the directory written by "
                          f"{'save_pretrained' if self.kind.prefix == 'hf' else 'save_to_preset'}"
                          ", on every host (or a shared file system)")


def parse_pretrained(name: str) -> PretrainedModel | None:
    """``hf:PATH`` / ``keras-hub:PATH`` as a ``PretrainedModel``; None for any other name."""
    prefix, sep, spec = name.partition(":")
    if not sep or prefix not in KINDS:
        return None
    if not spec:
        raise ConfigError(f"--model {name}: give the model's directory after '{prefix}:'")
    return PretrainedModel(KINDS[prefix], spec)


def is_pretrained(name: str) -> bool:
    prefix, sep, _ = name.partition(":")
    return bool(sep) and prefix in KINDS


def check_framework(model: PretrainedModel, framework: str) -> None:
    if model.kind.framework != framework:
        other = next(k for k in KINDS.values() if k.framework == framework)
        raise ConfigError(f"--model {model.name} is {model.kind.what}, which --framework "
                          f"{model.kind.framework} loads, not --framework {framework}",
                          hint=f"use --framework {model.kind.framework}, or a {other.prefix}: "
                          f"model with --framework {framework}")


def hf_cache_root() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return Path(home) / "hub"


def hf_cache_snapshot(model_id: str) -> Path | None:
    """The snapshot directory of ``model_id`` (``org/name``) in the local Hugging Face cache,
    as ``huggingface_hub`` lays it out (``models--org--name/snapshots/<revision>``, the
    revision read from ``refs/main``), or None."""
    repo = hf_cache_root() / f"models--{model_id.replace('/', '--')}"
    ref = repo / "refs" / "main"
    snapshots = repo / "snapshots"
    if ref.is_file():
        candidate = snapshots / ref.read_text().strip()
        if candidate.is_dir():
            return candidate
    found = sorted(snapshots.iterdir()) if snapshots.is_dir() else []
    return found[-1] if len(found) == 1 else None


HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
              "pytorch_model.bin.index.json")
HF_TOKENIZER = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model",
                "sentencepiece.bpe.model", "tokenizer.model")


def missing_files(model: PretrainedModel, directory: Path) -> str | None:
    """What the directory lacks for loading, as one phrase, or None."""
    if model.kind.prefix == "hf":
        wants = [("config.json", ("config.json",)), ("weights", HF_WEIGHTS),
                 ("a tokenizer", HF_TOKENIZER)]
    else:
        wants = [("config.json", ("config.json",)), ("metadata.json", ("metadata.json",)),
                 ("a tokenizer", ("tokenizer.json",)), ("weights", ("model.weights.h5",))]
    for what, names in wants:
        if not any((directory / name).exists() for name in names):
            return f"{what} ({' or '.join(names)})"
    return None


def check_pretrained(name: str, framework: str) -> Path | None:
    """The launcher's check of a pretrained ``--model``: the right framework, a directory
    that exists and holds what loading needs. Returns the directory (None: not pretrained)."""
    model = parse_pretrained(name)
    if model is None:
        return None
    check_framework(model, framework)
    directory = model.directory()
    lacking = missing_files(model, directory)
    if lacking is not None:
        writer = ("save_pretrained (model and tokenizer)" if model.kind.prefix == "hf"
                  else "save_to_preset")
        raise ConfigError(f"--model {model.name}: {directory} lacks {lacking}",
                          hint=f"give the directory written by {writer}")
    return directory


@dataclass(frozen=True)
class ModelSize:
    parameters: int
    trainable: int
    hidden: int  # width of the hidden states
    layers: int  # transformer blocks


BYTES_PER_VALUE = {"fp32": 4, "bf16": 2, "fp16": 2}


def rank_memory(size: ModelSize, batch_size: int, max_length: int,
                precision: str) -> dict[str, int]:
    """Bytes one rank needs to fine-tune, by part: fp32 weights, gradients of the trainable
    ones, AdamW's two moments, and one batch of activations at ``max_length`` (about 34
    values per token per hidden unit per block for a BERT-style encoder with 4x MLP, the
    estimate of Korthikanti et al. 2022 without its attention-score term, plus the scores)."""
    value = BYTES_PER_VALUE[precision]
    tokens = batch_size * max_length
    heads = max(size.hidden // 64, 1)
    activations = size.layers * (34 * tokens * size.hidden * value // 2
                                 + 5 * heads * batch_size * max_length * max_length * value // 2)
    return {"weights": 4 * size.parameters, "gradients": 4 * size.trainable,
            "optimizer": 8 * size.trainable, "activations": activations}


def memory_line(model: str, size: ModelSize, parts: dict[str, int]) -> str:
    total = sum(parts.values())
    return (f"{model}: {_count(size.parameters)} parameters ({_count(size.trainable)} "
            f"trained); a rank needs about {_mib(total)} ("
            + ", ".join(f"{name} {_mib(n)}" for name, n in parts.items()) + ")")


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def _mib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"
