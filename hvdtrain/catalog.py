"""Everything a user chooses by name, declared once: frameworks, models, data sets, optimizers.

Each choice is a ``Registry`` of names. The Click options read their ``Choice`` lists and help
from here, and ``TrainConfig`` (the single validator) checks names against the same registries,
so adding a model or a data set is one entry, not a tuple plus an if-chain in three places.
Entries that lead to code name it as ``"module:attr"`` and import it on use (``Registry.load``):
listing the choices, as ``hvdtrain --help`` does, imports no framework.

This module sits at the bottom of the package (it imports only ``errors``); the targets it
names live higher up, which is why they are strings and never imports.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from hvdtrain.errors import ConfigError


@dataclass(frozen=True)
class Choice:
    name: str
    help: str = ""
    target: str = ""  # "module:attr" of the code behind the name, imported on use


@dataclass(frozen=True)
class FrameworkChoice(Choice):
    # "module:attr" of what needs the framework but not Horovod (build a model, read a
    # checkpoint): the launcher's model check runs it in a subprocess
    # (``train_launcher.modelcheck``)
    offline: str = ""
    # the zip member (suffix) that marks this framework's checkpoint files, so a checkpoint
    # can be told apart without importing its framework
    checkpoint_marker: str = ""
    # "module:attr" of the rank-side predictor class behind evaluate and predict
    predictor: str = ""


@dataclass(frozen=True)
class ExportChoice(Choice):
    framework: str = ""  # the framework whose checkpoints this format exports
    directory: bool = False  # the export is a directory (SavedModel), not one file


@dataclass(frozen=True)
class ModelChoice(Choice):
    data_kinds: tuple[str, ...] = ()  # which Dataset.kind values this model reads
    needs: str = ""  # how to say what it needs in an error


@dataclass(frozen=True)
class DataChoice(Choice):
    kind: str = "tabular"  # tabular | image | text
    # "module:attr" of a check the launcher runs before any rank starts, when it can be done
    # more cheaply than loading (same signature as the loader, returns nothing); else the
    # loader itself is the check (user files) or none is needed (built-in sets)
    check: str = ""


C = TypeVar("C", bound=Choice)


class Registry(Generic[C]):
    """An ordered name → entry table for one option (``flag`` names it in errors)."""

    def __init__(self, flag: str, entries: Sequence[C], hint: str | None = None) -> None:
        self.flag = flag
        self.hint = hint  # added to the error for an unknown name
        self._entries = {entry.name: entry for entry in entries}

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[C]:
        return iter(self._entries.values())

    def get(self, name: str) -> C:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(f"{self.flag} must be one of {', '.join(self._entries)}, "
                              f"got {name!r}", hint=self.hint) from None

    def load(self, name: str, field: str = "target") -> Any:
        """Import the code behind ``name`` (its ``module:attr`` target, or another field of
        the entry that names code, such as a framework's ``offline``)."""
        module, _, attr = str(getattr(self.get(name), field)).partition(":")
        return getattr(importlib.import_module(module), attr)


FRAMEWORKS: Registry[FrameworkChoice] = Registry("--framework", [
    FrameworkChoice("torch", "PyTorch", "hvdtrain.frameworks.torch.adapter:TorchAdapter",
                    offline="hvdtrain.frameworks.torch.offline:OFFLINE",
                    checkpoint_marker="data.pkl",
                    predictor="hvdtrain.frameworks.torch.inference:TorchPredictor"),
    FrameworkChoice("tensorflow", "TensorFlow 2 / Keras 3",
                    "hvdtrain.frameworks.tensorflow.adapter:TensorFlowAdapter",
                    offline="hvdtrain.frameworks.tensorflow.offline:OFFLINE",
                    checkpoint_marker="meta.npy",
                    predictor="hvdtrain.frameworks.tensorflow.inference:TensorFlowPredictor"),
])

# Each framework's ``models`` module has one builder per name here (a conformance test checks).
MODELS: Registry[ModelChoice] = Registry("--model", [
    ModelChoice("mlp", "in→256→256→out", data_kinds=("tabular", "image"),
                needs="tabular or image data (it cannot read text: use --model transformer)"),
    ModelChoice("cnn", "conv net for 8×8 digits", data_kinds=("image",),
                needs="image data (e.g. digits)"),
    ModelChoice("transformer", "byte-token encoder for text", data_kinds=("text",),
                needs="text data (synthetic-text or a .jsonl file)"),
], hint="or give your own model as 'module.path:factory'")
USER_MODEL_HELP = "or your own 'module.path:factory' returning a model"

DATASETS: Registry[DataChoice] = Registry("--data", [
    DataChoice("synthetic", "generated 128-feature binary classification (not real data)",
               "hvdtrain.training.datasets:synthetic_set", kind="tabular"),
    DataChoice("digits", "UCI 8×8 handwritten digits (ships with scikit-learn)",
               "hvdtrain.training.datasets:digits", kind="image"),
    DataChoice("breast-cancer", "Wisconsin diagnostic set (ships with scikit-learn)",
               "hvdtrain.training.datasets:breast_cancer", kind="tabular"),
    DataChoice("synthetic-text", "generated sentiment-style sentences (not real data)",
               "hvdtrain.training.datasets:synthetic_text_set", kind="text"),
], hint="or give a .csv, .npz or .jsonl file")
# User files, by suffix.
DATA_FILES: Registry[DataChoice] = Registry("--data file type", [
    DataChoice(".csv", "header row; the label column by name, every other column numeric",
               "hvdtrain.training.datasets:csv_file", kind="tabular"),
    DataChoice(".npz", "arrays x and y", "hvdtrain.training.datasets:npz_file",
               kind="tabular", check="hvdtrain.training.datasets:check_npz_file"),
    DataChoice(".jsonl", "objects with text and label", "hvdtrain.training.datasets:jsonl_file",
               kind="text"),
])

OPTIMIZERS: Registry[Choice] = Registry("--optimizer", [
    Choice("adam", "Adam, epsilon 1e-8; weight decay as L2 on the gradient"),
    Choice("adamw", "AdamW, decoupled weight decay"),
    Choice("sgd", "SGD with momentum 0.9"),
])
COMPRESSIONS: Registry[Choice] = Registry("--compression", [
    Choice("none", "fp32 allreduce"),
    Choice("fp16", "overflow-safe fp16 (pre-scaled, fp32 retry on overflow)"),
    Choice("bf16", "bfloat16 on the wire (fp32's range: no pre-scaling), added in fp32"),
    Choice("powersgd", "PowerSGD low-rank factors with error feedback (--powersgd-rank)"),
])
SPARSE_EMBEDDINGS: Registry[Choice] = Registry("--sparse-embeddings", [
    Choice("auto", "send an embedding's gradient as the rows a step touched when that is at "
           "most half the bytes of the dense allreduce (torch)"),
    Choice("on", "always as touched rows (torch)"),
    Choice("off", "always the whole matrix"),
])
ON_NONFINITE: Registry[Choice] = Registry("--on-nonfinite", [
    Choice("stop", "stop every rank at the step whose loss became NaN/inf (exit 8); the last "
           "good checkpoint stays the newest"),
    Choice("skip", "skip that optimizer step on every rank and go on (counted as "
           "nonfinite_skips)"),
])
LR_SCHEDULES: Registry[Choice] = Registry("--lr-schedule", [
    Choice("constant", "the lr after warm-up throughout"),
    Choice("linear", "linear decay to 0 at the last step, after warm-up"),
    Choice("cosine", "cosine decay to 0 at the last step, after warm-up"),
])
PRECISIONS: Registry[Choice] = Registry("--precision", [
    Choice("fp32", "float32 throughout"),
    Choice("bf16", "bfloat16 autocast for the forward pass (CPU and recent GPUs); fp32 weights"),
    Choice("fp16", "float16 autocast with a loss scaler (GPU only); fp32 master weights"),
])
LR_SCALINGS: Registry[Choice] = Registry("--lr-scaling", [
    Choice("linear", "lr × ranks (Horovod recipe)"),
    Choice("none", "the lr as given"),
])

LAUNCHERS: Registry[Choice] = Registry("--launcher", [
    Choice("auto", "mpirun when MPI is installed, else horovodrun --gloo"),
    Choice("horovodrun", "Horovod's own launcher (MPI or Gloo)"),
    Choice("mpirun", "OpenMPI, MPICH or Intel MPI"),
])
CONTROLLERS: Registry[Choice] = Registry("--controller", [
    Choice("auto", "mpi when MPI is installed, else gloo"),
    Choice("mpi", "Horovod over MPI"),
    Choice("gloo", "Horovod over Gloo (horovodrun only; needs no MPI)"),
])
LOG_LEVELS: Registry[Choice] = Registry("--log-level", [
    Choice(level) for level in ("TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "FATAL")
])

# `hvdtrain export --format`: each names the framework whose checkpoints it exports.
EXPORT_FORMATS: Registry[ExportChoice] = Registry("--format", [
    ExportChoice("torchscript", "TorchScript file (torch.jit.load)",
                 "hvdtrain.frameworks.torch.export:export_torchscript", framework="torch"),
    ExportChoice("onnx", "ONNX file (onnxruntime); checked with onnxruntime when installed",
                 "hvdtrain.frameworks.torch.export:export_onnx", framework="torch"),
    ExportChoice("hf", "a fine-tuned hf: model as a save_pretrained directory (model, "
                 "tokenizer, label names; transformers' from_pretrained)",
                 "hvdtrain.frameworks.torch.export:export_hf", framework="torch",
                 directory=True),
    ExportChoice("savedmodel", "TensorFlow SavedModel directory (tf.saved_model.load, "
                 "endpoint 'serve')", "hvdtrain.frameworks.tensorflow.export:export_savedmodel",
                 framework="tensorflow", directory=True),
    ExportChoice("keras", "Keras 3 .keras file (keras.saving.load_model)",
                 "hvdtrain.frameworks.tensorflow.export:export_keras", framework="tensorflow"),
])
# `hvdtrain predict --output`: by suffix.
PREDICTION_FILES: Registry[Choice] = Registry("--output file type", [
    Choice(".csv", "index,prediction,prob_<class>... with a header row"),
    Choice(".jsonl", "one object per line with the same keys"),
], hint="name the output file .csv or .jsonl")
# Which samples of --data evaluate and predict read.
SPLITS: Registry[Choice] = Registry("--split", [
    Choice("auto", "val when --data is the checkpoint's training data, else all"),
    Choice("val", "the validation split the training run held out (same seed and fraction)"),
    Choice("train", "the training split of the checkpoint's training data"),
    Choice("all", "every sample of --data"),
])
