"""build_horovod.py's edit list, checked against the real sdist without building anything.

Every edit must find exactly the text it expects in horovod-0.28.1 (so a different sdist fails
the build loudly instead of half-editing it), every edited Python file must still parse, and
no ``.ref()`` on a variable may be left in the files Keras 3 variables reach. An edit whose
anchor does not occur must be refused.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _build_horovod() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_horovod", SCRIPTS / "build_horovod.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_horovod"] = module
    spec.loader.exec_module(module)
    return module


bh = _build_horovod()


def _sdist() -> Path:
    cache = Path(os.environ.get("HVDTRAIN_CACHE_DIR", Path(os.environ.get(
        "XDG_CACHE_HOME", Path.home() / ".cache")) / "hvdtrain"))
    path = cache / "horovod" / "sdist" / f"horovod-{bh.HOROVOD_VERSION}.tar.gz"
    if not path.is_file():
        pytest.skip(f"no cached sdist at {path} (scripts/build_horovod.py keeps one)")
    return path


def test_every_edit_applies_exactly_and_python_still_parses() -> None:
    root = f"horovod-{bh.HOROVOD_VERSION}/"
    edits = bh.ALL_EDITS
    with tarfile.open(_sdist()) as tar:
        texts = {}
        for path in {e.path for e in edits}:
            member = tar.extractfile(root + path)
            assert member is not None, path
            texts[path] = member.read().decode()
    for edit in edits:
        texts[edit.path] = bh.apply_edit(texts[edit.path], edit)
    for path, text in texts.items():
        if path.endswith(".py"):
            ast.parse(text, path)
            assert not re.search(r"\b\w+\.ref\(\)", text), path
    for extra in bh.KERAS3_ADDED:
        ast.parse((SCRIPTS / extra.source).read_text(), extra.source)
    assert "_keras3.create_distributed_optimizer" in texts["horovod/_keras/__init__.py"]


def test_an_edit_whose_anchor_is_missing_or_repeated_is_refused() -> None:
    edit = bh.SourceEdit("x.py", "old()", "new()", "test", count=2)
    assert bh.apply_edit("a = old()\nb = old()\n", edit) == "a = new()\nb = new()\n"
    with pytest.raises(SystemExit, match="expected 2 occurrence"):
        bh.apply_edit("a = old()\n", edit)


def test_the_cache_key_changes_with_the_edits() -> None:
    assert bh.edits_digest() in bh.cache_key()
