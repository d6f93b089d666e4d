"""Everything the launching host can check before any rank starts, in seconds.

A mistake found by the ranks costs a launch (tens of seconds, more on a cluster) and ends as a
rank's traceback in a log; found here it is one line that names the file and the place, a
hint, and an exit code of its own (``errors``), with no rank started and nothing written.

* **data**: a user's file is read completely with the ranks' own reader (CSV and JSONL are
  small) or streamed (``.npz``: headers, then ``x`` in chunks, never whole in memory): columns,
  numbers, shapes, dtypes, class ids, NaN/inf. A path this host cannot see keeps the plain
  "no such data file" error (ranks on other hosts may see other files, but the run directory
  and the data are expected on a shared filesystem).
* **model**: a built-in model must read the data's kind (``catalog.MODELS``), no framework
  needed; a user's ``module:factory`` is imported, built and run once on the data in a
  subprocess with the rank's framework (``train_launcher.modelcheck``), so this process never
  imports one. Skipped, with a note, when the framework is not installed on this host.
* **resume**: ``latest`` or a path resolves to a checkpoint that is complete (zip CRCs) and
  whose format, framework, model and data match, read without a framework.
* **disk space**: a note when the run directory's filesystem cannot hold the checkpoints the
  run will keep (``train_launcher.diskspace``; a full disk mid-run is exit 7, but after the work).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from hvdtrain.catalog import DATA_FILES, DATASETS
from hvdtrain.config import TrainConfig, is_user_model
from hvdtrain.errors import ConfigError
from hvdtrain.frameworks.models import check_model_kind, check_user_module_exists
from hvdtrain.launch.processes import signal_group
from hvdtrain.pretrained import ModelSize, check_pretrained, is_pretrained, memory_line
from hvdtrain.train_launcher.diskspace import space_note
from hvdtrain.train_launcher.modelcheck import error_from
from hvdtrain.training.checkpoint import CheckpointStore, check_compatible, read_checkpoint_meta
from hvdtrain.training.datasets import Loader, check_data_source
from hvdtrain.training.text_data import check_text_data

MODEL_CHECK_TIMEOUT = 300.0  # seconds; a factory may download weights
CHECK_MODULE = "hvdtrain.train_launcher.modelcheck"


def validate_run(config: TrainConfig, run_dir: Path,
                 model_check_timeout: float = MODEL_CHECK_TIMEOUT,
                 data_may_be_elsewhere: bool = False) -> list[str]:
    """Raise the first problem (``DataError``, ``ConfigError``, ``CheckpointError``); return
    notes for the user (checks that could not be made on this host).

    ``data_may_be_elsewhere``: no rank runs on this host, so a data file that only the ranks'
    hosts have is fine: the check is skipped (and said), the ranks report any problem."""
    if is_pretrained(config.model):
        return validate_pretrained(config, run_dir, model_check_timeout, data_may_be_elsewhere)
    path = Path(config.data)
    if (data_may_be_elsewhere and config.data not in DATASETS
            and path.suffix in DATA_FILES and not path.exists()):
        return [f"{config.data} is not on this host: the ranks check it where they run"]
    kind, data_name = check_data(config)
    check_model_kind(config.model, kind, data_name)
    checkpoint = check_resume(config, run_dir) if config.resume else None
    notes = []
    low_space = None if data_may_be_elsewhere else space_note(config, run_dir, checkpoint)
    if low_space:  # (with no rank here, the run directory is another host's)
        notes.append(low_space)
    if is_user_model(config.model):
        check_user_module_exists(config.model)  # instant; the subprocess takes seconds
        skipped = check_user_model(config, checkpoint, model_check_timeout)
        if skipped:
            notes.append(f"--model {config.model} not checked on this host: {skipped}")
    return notes


def validate_pretrained(config: TrainConfig, run_dir: Path, model_check_timeout: float,
                        data_may_be_elsewhere: bool) -> list[str]:
    """A pretrained model: its directory and files, the text file's columns and labels, then
    the model loaded and run once on the tokenized data in a subprocess, which also sizes it:
    the memory a rank needs is printed, and refused when it clearly exceeds this host's."""
    check_pretrained(config.model, config.framework)
    if data_may_be_elsewhere and not Path(config.data).exists():
        return [f"{config.data} is not on this host: the ranks check it where they run"]
    check_text_data(config)
    checkpoint = check_resume(config, run_dir) if config.resume else None
    outcome = run_model_check(config, checkpoint, model_check_timeout)
    if "skipped" in outcome:
        return [f"--model {config.model} not checked on this host: {outcome['skipped']}"]
    notes = []
    if "size" in outcome:
        size, parts = ModelSize(**outcome["size"]), outcome["memory"]
        notes.append(memory_line(config.model, size, parts))
        available = host_memory()
        if available and sum(parts.values()) > available:
            raise ConfigError(f"{memory_line(config.model, size, parts)}; this host has "
                              f"{available / 2**30:.1f} GiB available",
                              hint="lower --batch-size or --max-length, use --precision bf16, "
                              "or --freeze-layers")
    low_space = None if data_may_be_elsewhere else space_note(config, run_dir, checkpoint)
    return [*notes, low_space] if low_space else notes


def host_memory() -> int | None:
    """Bytes of memory available on this host (Linux), or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_data(config: TrainConfig) -> tuple[str, str]:
    """(kind, name as the ranks' Dataset will call it) after checking a user's file whole."""
    check_data_source(config.data)
    if config.data in DATASETS:
        return DATASETS.get(config.data).kind, config.data
    path = Path(config.data)
    entry = DATA_FILES.get(path.suffix)
    checker: Loader = DATA_FILES.load(path.suffix, "check" if entry.check else "target")
    checker(config.data, config.seed, config.val_fraction, config.label_column)
    return entry.kind, path.name


def check_resume(config: TrainConfig, run_dir: Path) -> Path | None:
    """The checkpoint to resume from, checked; None for ``--resume auto`` with none yet."""
    path = CheckpointStore(run_dir / "checkpoints").resolve(config.resume or "latest")
    if path is None:
        return None
    check_compatible(read_checkpoint_meta(path), path, {
        "framework": config.framework, "model": config.model, "data": config.data})
    return path


def check_user_model(config: TrainConfig, checkpoint: Path | None,
                     timeout: float) -> str | None:
    """Run ``train_launcher.modelcheck`` in a subprocess; raise its error, or return why it was
    skipped (``None`` when the model is fine)."""
    skipped: str | None = run_model_check(config, checkpoint, timeout).get("skipped")
    return skipped


def run_model_check(config: TrainConfig, checkpoint: Path | None,
                    timeout: float) -> dict[str, Any]:
    """Run ``train_launcher.modelcheck`` in a subprocess; raise its error, or return its
    outcome (``skipped``: why it could not run here; ``size``/``memory``: a pretrained
    model's)."""
    with tempfile.TemporaryDirectory(prefix="hvdtrain-modelcheck-") as tmp:
        request, result, output = (Path(tmp) / n for n in ("request.json", "result.json",
                                                            "output.txt"))
        request.write_text(json.dumps({"config": config.as_json(),
                                       "checkpoint": str(checkpoint) if checkpoint else None}))
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
               "TF_FORCE_GPU_ALLOW_GROWTH": "true"}
        with output.open("wb") as sink:
            proc = subprocess.Popen([sys.executable, "-m", CHECK_MODULE, str(request),
                                     str(result)], stdin=subprocess.DEVNULL, stdout=sink,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=True)
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise ConfigError(f"--model {config.model}: building the model took longer "
                                  f"than {timeout:g} s on this host",
                                  hint="a factory should build the model quickly; it runs on "
                                  "this host and in every rank") from None
            finally:
                if proc.poll() is None:
                    signal_group(proc.pid, signal.SIGKILL)
                    proc.wait()
        if not result.is_file():
            lines = [ln for ln in output.read_text(errors="replace").splitlines() if ln.strip()]
            last = lines[-1][:200] if lines else "no output"
            raise ConfigError(f"--model {config.model}: the model check crashed (exit code "
                              f"{code}): {last}",
                              hint="try calling the factory in a Python shell on this "
                              "host")
        outcome = json.loads(result.read_text())
    if "error" in outcome:
        raise error_from(outcome)
    return dict(outcome)
