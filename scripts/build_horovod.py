"""Build (or reuse) a Horovod wheel that works with today's PyTorch and TensorFlow.

Why this exists: Horovod's last release (0.28.1) does not build as published against
PyTorch >= 2.1 or TensorFlow >= 2.16. Three small edits to its sdist fix that (see
``docs/HOROVOD_BUILD.md``). Further edits make Horovod's TF API work on Keras 3 and give its
MPI allreduce a bfloat16 sum for torch (``--compression bf16``). We apply them here, from our
own code, to the pristine sdist downloaded from PyPI; nothing of Horovod is vendored in this
repository.

The build takes minutes, so the wheel is cached, keyed by everything that changes its ABI:
Horovod, torch, tensorflow and Python versions plus the ``HOROVOD_*`` build variables a GPU
cluster passes through (``HOROVOD_GPU_OPERATIONS=NCCL`` and friends). A second set-up
installs the cached wheel in seconds.

Run it with the interpreter of the environment to install into (``.venv/bin/python``).
Standard library only. Its only network traffic is pip's, to the configured package index: set-up
must work where nothing else is reachable (a cluster's build node, a mirror-only CI), so
nothing is fetched from anywhere else, not even best effort.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

HOROVOD_VERSION = "0.28.1"
SCRIPTS = Path(__file__).resolve().parent

# Build variables that change what gets compiled. They are passed through to the build and
# are part of the cache key. The four framework/controller switches are always set by us.
PASSTHROUGH_PREFIXES = ("HOROVOD_",)
FIXED_BUILD_ENV = {
    "HOROVOD_WITH_PYTORCH": "1",
    "HOROVOD_WITH_TENSORFLOW": "1",
    "HOROVOD_WITHOUT_MXNET": "1",
    "HOROVOD_WITH_MPI": "1",
    "HOROVOD_WITH_GLOO": "1",
}


@dataclass(frozen=True)
class SourceEdit:
    """One text replacement in the sdist, checked: ``old`` must occur exactly ``count`` times
    (all are replaced), so an sdist that is not the one we read fails loudly, never half-edited.
    With ``regex``, ``old`` is a pattern and ``new`` its replacement template."""

    path: str
    old: str
    new: str
    why: str
    count: int = 1
    regex: bool = False


@dataclass(frozen=True)
class AddedFile:
    """A file of ours installed into Horovod's package tree (``source`` is relative to this
    repository's ``scripts/``)."""

    path: str
    source: str
    why: str


EDITS = (
    SourceEdit(
        "CMakeLists.txt",
        "set(CMAKE_CXX_STANDARD 14)\n",
        "set(CMAKE_CXX_STANDARD 17)\n",
        "PyTorch >= 2.1 headers need C++17; Gloo must use the same standard as the torch op",
    ),
    SourceEdit(
        "horovod/torch/CMakeLists.txt",
        "    set(CMAKE_CXX_STANDARD 14)\n",
        "    set(CMAKE_CXX_STANDARD 17)\n",
        "same fix as upstream PR #3998 (merged after 0.28.1, never released)",
    ),
    SourceEdit(
        "horovod/tensorflow/CMakeLists.txt",
        'list(APPEND TF_SOURCES "${PROJECT_SOURCE_DIR}/horovod/tensorflow/xla_mpi_ops.cc")\n',
        "",
        "xla_mpi_ops.cc needs XLA headers TF 2.21 no longer ships (opt-in XLA path only)",
    ),
)

# Keras 3 (TF >= 2.16) support for Horovod's own TensorFlow API, horovod/horovod#4290.
# The logic lives in our scripts/horovod_patches/keras3_compat.py, installed as
# horovod/tensorflow/keras3_compat.py; the edits below only point Horovod's code at it.
KERAS3_MODULE = "horovod.tensorflow.keras3_compat"
KERAS3_ADDED = (
    AddedFile("horovod/tensorflow/keras3_compat.py", "horovod_patches/keras3_compat.py",
              "Keras 3 DistributedOptimizer, load_model, variable refs, callback helpers"),
)
_REF_IMPORT = f"from {KERAS3_MODULE} import ref as _hvd_ref\n"
_COMPAT_IMPORT = f"import {KERAS3_MODULE} as _keras3\n"
# Every ``x.ref()`` on a variable becomes ``_hvd_ref(x)``: Keras 3 variables have no ``ref``.
_REF_PATTERN = r"\b([A-Za-z_]\w*)\.ref\(\)"
_REF_FILES = (  # file, its first import line (the new import goes right after it), .ref() count
    ("horovod/tensorflow/__init__.py", "import os\n", 11),
    ("horovod/tensorflow/util.py", "import tensorflow as tf\n", 1),
    ("horovod/tensorflow/gradient_aggregation.py", "import os\n", 5),
    ("horovod/tensorflow/gradient_aggregation_eager.py", "import os\n", 5),
    ("horovod/_keras/__init__.py", "import os\n", 5),
    ("horovod/_keras/callbacks.py", "import warnings\n", 2),
)
KERAS3_EDITS: tuple[SourceEdit, ...] = (
    *(edit
    for path, first_import, refs in _REF_FILES
    for edit in (
        SourceEdit(path, first_import, first_import + _REF_IMPORT + _COMPAT_IMPORT,
                   "import the Keras 3 compatibility helpers"),
        SourceEdit(path, _REF_PATTERN, r"_hvd_ref(\1)",
                   "Keras 3 variables have no .ref(): key variable maps by _hvd_ref", refs,
                   regex=True),
    )),
    SourceEdit(
        "horovod/tensorflow/__init__.py", "var.name", "_hvd_ref(var)",
        "explicit gradient groups: match variables by identity, Keras 3 names are not unique",
        4,
    ),
    SourceEdit(
        "horovod/tensorflow/__init__.py",
        "rg = self._allreduce_grads(rg, rs, use_generic_names)",
        "rg = self._allreduce_grads(rg, _keras3.tf_variables(rs), use_generic_names)",
        "DistributedGradientTape: hand tf.Variables, not Keras 3 variables, to the tf.function",
    ),
    SourceEdit(
        "horovod/_keras/__init__.py",
        "    class _DistributedOptimizer(*optimizer.__class__.__bases__):\n",
        "    if _keras3.is_keras3_optimizer(optimizer):\n"
        "        return _keras3.create_distributed_optimizer(\n"
        "            optimizer, name, device_dense, device_sparse, compression, sparse_as_dense,\n"
        "            gradient_predivide_factor, op, backward_passes_per_step,\n"
        "            average_aggregated_gradients, groups, process_set, scale_local_gradients)\n"
        "\n"
        "    class _DistributedOptimizer(*optimizer.__class__.__bases__):\n",
        "DistributedOptimizer: Keras 3 optimizers get one that averages in apply(), which "
        "model.fit and apply_gradients call (Keras 2 hooks are never called there)",
    ),
    SourceEdit(
        "horovod/_keras/__init__.py",
        "    if legacy_opts:\n        keras_subclasses",
        "    if not legacy_opts and _keras3.is_keras3():\n"
        "        return _keras3.load_model(keras, wrap_optimizer, filepath, custom_optimizers,\n"
        "                                  custom_objects)\n"
        "    if legacy_opts:\n        keras_subclasses",
        "load_model: Keras 3 deserialises optimizers by class, not by a factory function",
    ),
    SourceEdit(
        "horovod/_keras/callbacks.py", "self.model.optimizer.variables()",
        "_keras3.optimizer_variables(self.model.optimizer)",
        "BroadcastGlobalVariablesCallback: optimizer.variables is a property in Keras 3",
    ),
    SourceEdit(
        "horovod/_keras/callbacks.py", "self.backend.constant(value, name=metric)",
        "tf.constant(value, name=metric)",
        "MetricAverageCallback: keras.backend has no constant() in Keras 3",
    ),
    SourceEdit(
        "horovod/_keras/callbacks.py", "self.backend.get_value(self.model.optimizer.lr)",
        "_keras3.get_lr(self.backend, self.model.optimizer)",
        "learning-rate callbacks: Keras 3 has learning_rate, no lr, no backend.get_value", 4,
    ),
    SourceEdit(
        "horovod/_keras/callbacks.py", "self.backend.set_value(self.model.optimizer.lr, new_lr)",
        "_keras3.set_lr(self.backend, self.model.optimizer, new_lr)",
        "learning-rate callbacks: assign Keras 3's learning-rate variable",
    ),
    SourceEdit(
        "horovod/_keras/callbacks.py",
        "if hasattr(self.model.optimizer, 'momentum') and self.momentum_correction:",
        "if _keras3.momentum_is_settable(self.model.optimizer) and self.momentum_correction:",
        "momentum correction only where momentum is a variable (Keras 3 SGD: a constant)",
    ),
    *(edit
    for path in ("horovod/tensorflow/keras/callbacks.py", "horovod/keras/callbacks.py")
    for edit in (
        SourceEdit(path, "import tensorflow as tf\n", "import tensorflow as tf\n" + _COMPAT_IMPORT,
                   "import the Keras 3 compatibility helpers"),
        SourceEdit(path, "isinstance(local_variables, tf.Variable)",
                   "_keras3.is_variable(local_variables)",
                   "BroadcastGlobalVariablesCallback(local_variables=): a Keras 3 variable"),
        SourceEdit(path, "isinstance(var, tf.Variable) for var in local_variables",
                   "_keras3.is_variable(var) for var in local_variables",
                   "BroadcastGlobalVariablesCallback(local_variables=): Keras 3 variables"),
        SourceEdit(path, "must be of tf.Variable type.",
                   "must be tf.Variable or keras.Variable objects.",
                   "BroadcastGlobalVariablesCallback: name the types it now accepts"),
    )),
    SourceEdit(
        "horovod/tensorflow/functions.py", "import tensorflow as tf\n",
        "import tensorflow as tf\n" + _COMPAT_IMPORT, "import the Keras 3 compatibility helpers",
    ),
    SourceEdit(
        "horovod/tensorflow/functions.py", "    if inplace:\n        vars_by_device = {}\n",
        "    variables = _keras3.tf_variables(variables)\n"
        "    if inplace:\n        vars_by_device = {}\n",
        "broadcast_variables: assign through the tf.Variable behind each Keras 3 variable",
    ),
    SourceEdit(
        "horovod/tensorflow/elastic.py", "import tensorflow as tf\n",
        "import tensorflow as tf\n" + _COMPAT_IMPORT, "import the Keras 3 compatibility helpers",
    ),
    SourceEdit(
        "horovod/tensorflow/elastic.py", r"\b(\w+(?:\.optimizer)?)\.variables\(\)",
        r"_keras3.optimizer_variables(\1)",
        "TensorFlowKerasState: optimizer.variables is a property in Keras 3", 4, regex=True,
    ),
    SourceEdit(
        "horovod/tensorflow/elastic.py",
        "            if 'HorovodAllreduce' in e.message or \\\n"
        "                    'HorovodAllgather' in e.message or \\\n"
        "                    'HorovodBroadcast' in e.message:\n"
        "                raise HorovodInternalError(e)\n",
        "            if 'Horovod' in e.message:  # HorovodGroupedAllreduce, HorovodAlltoall too\n"
        "                raise HorovodInternalError(e)\n"
        "            raise\n",
        "elastic run: a lost peer in any Horovod op (grouped allreduce too) is a reset, and any "
        "other error is raised, not swallowed (the worker used to end with exit 0)",
    ),
)


# bfloat16 in Horovod's MPI allreduce, for torch and TensorFlow (hvdtrain's --compression
# bf16): one collective per bucket instead of an alltoall and an allgather (or, at two ranks,
# an allgather). The sum lives in our scripts/horovod_patches/bf16_sum.h; the edits below give
# Horovod a BFLOAT16 type and route it there. Gloo gets no bf16 kernel (Horovod refuses the
# type there, as before), so hvdtrain uses this only under the MPI controller.
BF16_ADDED = (
    AddedFile("horovod/common/mpi/hvdtrain_bf16_sum.h", "horovod_patches/bf16_sum.h",
              "bfloat16 MPI datatype and sum (float32 add, round to nearest even)"),
)
_WHY_BF16 = "bfloat16 allreduce (sum) under MPI"
_FREE_FLOAT16_PROD = (
    "  if (mpi_float16_prod != MPI_OP_NULL) {\n    MPI_Op_free(&mpi_float16_prod);\n  }\n"
)
BF16_EDITS: tuple[SourceEdit, ...] = (
    SourceEdit("horovod/common/message.h", "  HOROVOD_BOOL = 9,\n",
               "  HOROVOD_BOOL = 9,\n  HOROVOD_BFLOAT16 = 10,\n", _WHY_BF16),
    SourceEdit("horovod/common/message.cc",
               "    case HOROVOD_BOOL:\n      static const std::string bool_(\"bool\");\n",
               "    case HOROVOD_BFLOAT16:\n"
               "      static const std::string bfloat16(\"bfloat16\");\n"
               "      return bfloat16;\n"
               "    case HOROVOD_BOOL:\n      static const std::string bool_(\"bool\");\n",
               _WHY_BF16),
    SourceEdit("horovod/common/message.cc", "    case HOROVOD_FLOAT16:\n      return 2;\n",
               "    case HOROVOD_FLOAT16:\n      return 2;\n"
               "    case HOROVOD_BFLOAT16:\n      return 2;\n", _WHY_BF16),
    SourceEdit("horovod/common/mpi/mpi_context.h", "  MPI_Op mpi_float16_prod;\n",
               "  MPI_Op mpi_float16_prod;\n"
               "  MPI_Datatype mpi_bfloat16_t = MPI_DATATYPE_NULL;\n"
               "  MPI_Op mpi_bfloat16_sum = MPI_OP_NULL;\n", _WHY_BF16),
    SourceEdit("horovod/common/mpi/mpi_context.cc", '#include "../half.h"\n',
               '#include "../half.h"\n#include "hvdtrain_bf16_sum.h"\n',
               _WHY_BF16),
    SourceEdit("horovod/common/mpi/mpi_context.cc",
               "  case HOROVOD_FLOAT32:\n    return MPI_FLOAT;\n",
               "  case HOROVOD_BFLOAT16:\n    return mpi_bfloat16_t;\n"
               "  case HOROVOD_FLOAT32:\n    return MPI_FLOAT;\n", _WHY_BF16),
    SourceEdit("horovod/common/mpi/mpi_context.cc",
               "  return dtype == HOROVOD_FLOAT16 ? mpi_float16_sum : MPI_SUM;\n",
               "  if (dtype == HOROVOD_BFLOAT16) {\n    return mpi_bfloat16_sum;\n  }\n"
               "  return dtype == HOROVOD_FLOAT16 ? mpi_float16_sum : MPI_SUM;\n", _WHY_BF16),
    SourceEdit("horovod/common/mpi/mpi_context.cc",
               "  CreateMPIFloat16TypeAndOps(mpi_float16_t, mpi_float16_sum, mpi_float16_min,\n"
               "                             mpi_float16_max, mpi_float16_prod);\n",
               "  CreateMPIFloat16TypeAndOps(mpi_float16_t, mpi_float16_sum, mpi_float16_min,\n"
               "                             mpi_float16_max, mpi_float16_prod);\n"
               "  hvdtrain_bf16::CreateTypeAndSum(mpi_bfloat16_t, mpi_bfloat16_sum);\n",
               "create the bfloat16 type and sum with float16's (global and process-set contexts)",
               count=2),
    SourceEdit("horovod/common/mpi/mpi_context.cc", _FREE_FLOAT16_PROD,
               _FREE_FLOAT16_PROD
               + "  if (mpi_bfloat16_t != MPI_DATATYPE_NULL) {\n"
               "    MPI_Type_free(&mpi_bfloat16_t);\n  }\n"
               "  if (mpi_bfloat16_sum != MPI_OP_NULL) {\n"
               "    MPI_Op_free(&mpi_bfloat16_sum);\n  }\n",
               "free the bfloat16 type and sum with float16's"),
    SourceEdit("horovod/torch/adapter_v2.cc",
               "  case common::HOROVOD_FLOAT16:\n    return ::torch::kHalf;\n",
               "  case common::HOROVOD_FLOAT16:\n    return ::torch::kHalf;\n"
               "  case common::HOROVOD_BFLOAT16:\n    return ::torch::kBFloat16;\n", _WHY_BF16),
    SourceEdit("horovod/torch/adapter_v2.cc",
               "  case ::torch::kHalf:\n    return common::HOROVOD_FLOAT16;\n",
               "  case ::torch::kHalf:\n    return common::HOROVOD_FLOAT16;\n"
               "  case ::torch::kBFloat16:\n    return common::HOROVOD_BFLOAT16;\n", _WHY_BF16),
    SourceEdit("horovod/torch/mpi_ops_v2.cc",
               '  m.def("horovod_torch_allreduce_async_torch_HalfTensor", &DoAllreduce);\n',
               '  m.def("horovod_torch_allreduce_async_torch_HalfTensor", &DoAllreduce);\n'
               '  m.def("horovod_torch_allreduce_async_torch_BFloat16Tensor", &DoAllreduce);\n',
               "torch: hvd.allreduce_async_ accepts a CPU bfloat16 tensor"),
    SourceEdit("horovod/tensorflow/mpi_ops.cc",
               "  case common::HOROVOD_FLOAT16:\n    return DT_HALF;\n",
               "  case common::HOROVOD_FLOAT16:\n    return DT_HALF;\n"
               "  case common::HOROVOD_BFLOAT16:\n    return DT_BFLOAT16;\n", _WHY_BF16),
    SourceEdit("horovod/tensorflow/mpi_ops.cc",
               "  case DT_HALF:\n    return common::HOROVOD_FLOAT16;\n",
               "  case DT_HALF:\n    return common::HOROVOD_FLOAT16;\n"
               "  case DT_BFLOAT16:\n    return common::HOROVOD_BFLOAT16;\n", _WHY_BF16),
    SourceEdit("horovod/tensorflow/mpi_ops.cc",
               '    .Attr("T: {uint8, int8, int32, int64, float16, float32, float64}")\n'
               '    .Attr("reduce_op: int")\n',
               '    .Attr("T: {uint8, int8, int32, int64, float16, bfloat16, float32, float64}")\n'
               '    .Attr("reduce_op: int")\n',
               "TensorFlow: HorovodAllreduce and HorovodGroupedAllreduce accept bfloat16",
               count=2),
)
ALL_EDITS = (*EDITS, *KERAS3_EDITS, *BF16_EDITS)
ALL_ADDED = (*KERAS3_ADDED, *BF16_ADDED)


def log(message: str) -> None:
    print(f"[horovod] {message}", flush=True)


def build_env_overrides() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.startswith(PASSTHROUGH_PREFIXES)}
    env.update(FIXED_BUILD_ENV)
    return dict(sorted(env.items()))


def cache_key() -> str:
    torch_version = metadata.version("torch")
    tf_version = metadata.version("tensorflow-cpu") if _has("tensorflow-cpu") else (
        metadata.version("tensorflow")
    )
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    env_digest = hashlib.sha256(repr(build_env_overrides()).encode()).hexdigest()[:10]
    return (
        f"horovod{HOROVOD_VERSION}-torch{torch_version}-tf{tf_version}-{py}-"
        f"{platform.machine()}-{env_digest}-e{edits_digest()}"
    )


def edits_digest() -> str:
    """Changes whenever an edit or an added file changes, so CI and set-ups rebuild."""
    digest = hashlib.sha256(repr(ALL_EDITS).encode())
    for extra in ALL_ADDED:
        digest.update((SCRIPTS / extra.source).read_bytes())
    return digest.hexdigest()[:8]


def _has(distribution: str) -> bool:
    try:
        metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def apply_edit(text: str, edit: SourceEdit) -> str:
    """``text`` with ``edit`` applied; SystemExit unless ``old`` occurs exactly ``count`` times."""
    pattern = edit.old if edit.regex else re.escape(edit.old)
    found = len(re.findall(pattern, text))
    if found != edit.count:
        raise SystemExit(
            f"[horovod] cannot apply edit to {edit.path}: expected {edit.count} occurrence(s) "
            f"of {edit.old.strip()!r}, found {found}; is this really horovod-{HOROVOD_VERSION}?"
        )
    if edit.regex:
        return re.sub(pattern, edit.new, text)
    return text.replace(edit.old, edit.new)


def apply_edits(source_dir: Path, edits: tuple[SourceEdit, ...] | None = None,
                added: tuple[AddedFile, ...] | None = None) -> None:
    """Apply ``edits`` (default: all) to a Horovod tree rooted at ``source_dir``, then install
    ``added`` (default: all). Also works on an installed package's parent (site-packages) for
    the Python edits: ``--patch-installed DIR`` uses that to try them without a rebuild."""
    for edit in ALL_EDITS if edits is None else edits:
        target = source_dir / edit.path
        target.write_text(apply_edit(target.read_text(), edit))
        log(f"edited {edit.path}: {edit.why}")
    for extra in ALL_ADDED if added is None else added:
        shutil.copyfile(SCRIPTS / extra.source, source_dir / extra.path)
        log(f"added {extra.path}: {extra.why}")


def extract_sdist(archive: Path, dest: Path) -> None:
    """Unpack ``archive`` into ``dest`` safely on every Python we support.

    ``extractall(filter="data")`` arrived in 3.11.4 (and in 3.8.17/3.9.17/3.10.12); Debian 12's
    stock python3 is 3.11.2, HPC distro Pythons are older still. There we check by hand what
    the ``data`` filter would refuse: only regular files and directories (an sdist holds
    nothing else), every path inside ``dest``, no setuid/setgid/sticky or group/other-write
    bits.
    """
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
            return
        root = dest.resolve()
        members = []
        for member in tar.getmembers():
            target = (root / member.name).resolve()
            inside = target == root or root in target.parents
            if not inside or not (member.isfile() or member.isdir()):
                raise SystemExit(
                    f"[horovod] refusing to unpack {archive.name}: member {member.name!r} is "
                    + ("outside the target directory" if not inside else "not a plain file")
                )
            member.mode &= 0o755
            members.append(member)
        tar.extractall(dest, members=members)


def pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]


def run_with_heartbeat(argv: list[str], env: dict[str, str], log_path: Path) -> int:
    """Run a long command, writing its output to ``log_path``; print progress every 20 s."""
    started = time.monotonic()
    with log_path.open("w") as sink:
        proc = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)
        done = threading.Event()

        def heartbeat() -> None:
            while not done.wait(20):
                last = _last_line(log_path)
                log(f"building… {time.monotonic() - started:4.0f}s  {last[:110]}")

        thread = threading.Thread(target=heartbeat, daemon=True)
        thread.start()
        code = proc.wait()
        done.set()
        thread.join()
    return code


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def build_wheel(wheel_dir: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="hvdtrain-horovod-") as tmp:
        work = Path(tmp)
        sdist = cached_sdist(wheel_dir.parent)
        extract_sdist(sdist, work)
        source = work / f"horovod-{HOROVOD_VERSION}"
        apply_edits(source)

        env = dict(os.environ)
        env.update(build_env_overrides())
        env.setdefault("MAKEFLAGS", f"-j{os.cpu_count() or 2}")
        shown = " ".join(f"{k}={v}" for k, v in build_env_overrides().items())
        log(f"compiling (several minutes on 2 cores) with {shown}")
        out = work / "wheel"
        wheel_dir.parent.mkdir(parents=True, exist_ok=True)
        log_path = wheel_dir.parent / f"build-{wheel_dir.name}.log"
        code = run_with_heartbeat(
            pip("wheel", "-v", "--no-build-isolation", "--no-deps", "-w", str(out), str(source)),
            env,
            log_path,
        )
        if code != 0:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
            raise SystemExit(f"{tail}\n[horovod] build failed (exit {code}); full log: {log_path}")
        built = next(out.glob("horovod-*.whl"))
        wheel_dir.mkdir(parents=True, exist_ok=True)
        final = wheel_dir / built.name
        shutil.copy2(built, final.with_suffix(".tmp"))
        os.replace(final.with_suffix(".tmp"), final)
        log(f"cached {final}")
        return final


def cached_sdist(cache: Path) -> Path:
    """The pristine sdist, downloaded from PyPI once and kept in ``cache/sdist`` (tests read
    Horovod's sources from it)."""
    target = cache / "sdist" / f"horovod-{HOROVOD_VERSION}.tar.gz"
    if target.is_file():
        log(f"reusing {target}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hvdtrain-sdist-") as tmp:
        log(f"downloading the horovod {HOROVOD_VERSION} sdist from PyPI")
        subprocess.run(
            pip("download", "--no-deps", "--no-binary", ":all:", "-d", tmp,
                f"horovod=={HOROVOD_VERSION}"),
            check=True,
        )
        shutil.copyfile(next(Path(tmp).glob(f"horovod-{HOROVOD_VERSION}.tar.gz")),
                        target.with_suffix(".tmp"))
    os.replace(target.with_suffix(".tmp"), target)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hvdtrain"
    parser.add_argument(
        "--cache-dir", type=Path, default=Path(os.environ.get("HVDTRAIN_CACHE_DIR", default_cache))
    )
    parser.add_argument("--force-rebuild", action="store_true")
    parser.add_argument(
        "--patch-installed", type=Path, metavar="DIR",
        help="apply only the Python (Keras 3) edits to a copy of an installed horovod package "
        "whose parent is DIR, to try them without a rebuild; then exit",
    )
    args = parser.parse_args()
    if args.patch_installed:
        apply_edits(args.patch_installed, KERAS3_EDITS, KERAS3_ADDED)
        return 0

    key = cache_key()
    stamp = Path(sys.prefix) / "hvdtrain-horovod-build.txt"
    if not args.force_rebuild and _has("horovod") and stamp.exists() and (
        stamp.read_text().strip() == key
    ):
        log(f"installed and current ({key})")
        return 0

    wheel_dir = args.cache_dir / "horovod" / key
    wheels = sorted(wheel_dir.glob("horovod-*.whl")) if wheel_dir.is_dir() else []
    if wheels and not args.force_rebuild:
        wheel = wheels[-1]
        log(f"reusing cached wheel {wheel}")
    else:
        wheel = build_wheel(wheel_dir)
    subprocess.run(pip("install", "--no-deps", "--force-reinstall", str(wheel)), check=True)
    stamp.write_text(key + "\n")
    log(f"installed {wheel.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
