"""Building a model by name, the same way for every framework.

``build_model`` first checks that the model fits the data (declared once in
``catalog.MODELS``: which data kinds each model reads), then calls either the framework's own
builder for a built-in name or the user's factory for ``module.path:factory``. Both adapters
go through here, so a mismatch is the same clear error whatever ``--framework`` says.

A user's factory is called with the keyword arguments it accepts among ``num_features``,
``num_outputs``, ``input_shape`` and ``num_classes`` (so ``def make(): ...`` works too). The
loss comes from the data's task: one output → binary cross-entropy, k → cross-entropy. Its
failures (the module does not import, the factory raises or returns something else) are one
``ConfigError`` naming the user's file and line, never a traceback; the launcher meets them
first, building the model in a subprocess (``train_launcher.modelcheck``) before any rank starts.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import inspect
import sys
import sysconfig
import traceback
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from hvdtrain.catalog import MODELS
from hvdtrain.config import is_user_model
from hvdtrain.errors import ConfigError
from hvdtrain.types import Dataset

Builder = Callable[[Dataset], Any]


def check_model_kind(name: str, kind: str, data_name: str) -> None:
    """A built-in model reads only the data kinds ``catalog.MODELS`` declares (no framework
    needed: the launcher checks this before any rank starts)."""
    if is_user_model(name):
        return  # a user's model: its factory decides
    model = MODELS.get(name)
    if kind not in model.data_kinds:
        raise ConfigError(f"--model {name} needs {model.needs}; {data_name!r} is {kind} data")


def check_model_fits(name: str, data: Dataset) -> None:
    check_model_kind(name, data.kind, data.name)


def where_raised(exc: BaseException) -> str:
    """``file:line`` of the innermost frame in the user's own code (not hvdtrain, not an
    installed package, not the standard library), or ''."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{_relative(exc.filename)}:{exc.lineno}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not _is_library(f.filename)]
    return f"{_relative(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""


def _is_library(filename: str) -> bool:
    if filename.startswith("<"):
        return True  # <frozen importlib._bootstrap> and alike
    path = Path(filename).resolve()
    paths = sysconfig.get_paths()
    roots = [Path(__file__).resolve().parents[1], Path(paths["stdlib"]).resolve()]
    return ("site-packages" in path.parts or "dist-packages" in path.parts
            or any(path.is_relative_to(root) for root in roots))


def _relative(filename: str) -> str:
    try:
        return str(Path(filename).resolve().relative_to(Path.cwd()))
    except ValueError:
        return filename


def describe_exception(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0][:200]
    where = where_raised(exc)
    return f"{type(exc).__name__}{': ' + text if text else ''}{' at ' + where if where else ''}"


def build_model(name: str, data: Dataset, builders: Mapping[str, Builder], expected: type,
                what: str) -> Any:
    """The model ``name`` for ``data``: a built-in from ``builders`` or a user's factory whose
    result must be an ``expected`` (named ``what`` in the error)."""
    check_model_fits(name, data)
    if is_user_model(name):
        return build_user_model(name, data, expected, what)
    return builders[name](data)


def split_user_model(spec: str) -> tuple[str, str]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"--model {spec!r}: expected 'module.path:factory'")
    return module_name, attr


def cannot_import(spec: str, module_name: str, why: str) -> ConfigError:
    return ConfigError(f"--model {spec!r}: cannot import {module_name!r} ({why})",
                       hint="the module must be importable from the current directory or the "
                       "Python path, on every host")


def check_user_module_exists(spec: str) -> None:
    """Without importing anything: the factory's top-level package can be found (here or in
    the current directory, as ``build_user_model`` looks). A quick first check on the
    launching host; the full one imports and builds the model (``train_launcher.modelcheck``)."""
    module_name, _ = split_user_model(spec)
    top = module_name.split(".")[0]
    try:
        found = (importlib.util.find_spec(top) is not None
                 or importlib.machinery.PathFinder.find_spec(top, [str(Path.cwd())]) is not None)
    except (ImportError, ValueError):
        found = True  # let the full check say what is wrong
    if not found:
        raise cannot_import(spec, module_name, f"No module named {top!r}")


def build_user_model(spec: str, data: Dataset, expected: type, what: str) -> Any:
    """Import and call the factory; its result must be an ``expected`` (named ``what``)."""
    module_name, attr = split_user_model(spec)
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # like `python -m`, find modules in the cwd
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise cannot_import(spec, module_name, str(exc)) from None
    except Exception as exc:  # the user's module failed while being imported
        raise ConfigError(f"--model {spec!r}: importing {module_name!r} raised "
                          f"{describe_exception(exc)}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"--model {spec!r}: {module_name} has no callable {attr!r}",
                          hint="the part after ':' names a function of that module that "
                          "returns the model")
    offered = {"num_features": data.num_features, "num_outputs": data.num_outputs,
               "input_shape": tuple(data.x_train.shape[1:]), "num_classes": data.num_classes}
    accepted: Collection[str]
    try:
        accepted = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin or C callable: offer nothing
        accepted = ()
    try:
        model = factory(**{k: v for k, v in offered.items() if k in accepted})
    except Exception as exc:  # the user's code: report it as one line, not a traceback
        raise ConfigError(f"--model {spec}: the factory raised {describe_exception(exc)}",
                          hint=f"it is called with those of {', '.join(offered)} it accepts; "
                          f"try it in Python: from {module_name} import {attr}") from None
    if not isinstance(model, expected):
        raise ConfigError(f"--model {spec}: the factory returned {type(model).__name__}, "
                          f"not a {what}",
                          hint=f"--framework decides the model type: return a {what}")
    return model
