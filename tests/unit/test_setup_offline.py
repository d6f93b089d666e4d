"""Set-up reaches nothing but the package registries (issue 22, item 7).

``scripts/build_horovod.py`` once fetched an example script from GitHub after downloading
the sdist ("could not fetch ... Name or service not known" on every offline set-up). Here the
sdist step runs with pip faked and every socket refused: it must not even try. The set-up
scripts are also read for other ways out (URL fetchers, network modules).
"""

from __future__ import annotations

import ast
import importlib.util
import re
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
NETWORK_MODULES = ("urllib", "http", "socket", "requests", "httpx", "ftplib", "ssl")


def _build_horovod() -> ModuleType:
    module = sys.modules.get("build_horovod")
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location("build_horovod", SCRIPTS / "build_horovod.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_horovod"] = module
    spec.loader.exec_module(module)
    return module


def test_fetching_the_sdist_asks_pip_and_nobody_else(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    bh = _build_horovod()
    contacted: list[tuple[Any, ...]] = []

    def refuse(*args: Any, **_kwargs: Any) -> Any:
        contacted.append(args)
        raise OSError("no network in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    commands: list[list[str]] = []

    def fake_pip(argv: list[str], **_kwargs: Any) -> subprocess.CompletedProcess[str]:
        commands.append(argv)
        dest = Path(argv[argv.index("-d") + 1])
        (dest / f"horovod-{bh.HOROVOD_VERSION}.tar.gz").write_bytes(b"sdist")
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(bh.subprocess, "run", fake_pip)
    target = bh.cached_sdist(tmp_path)
    assert target.read_bytes() == b"sdist"
    assert contacted == []
    assert len(commands) == 1 and commands[0][1:3] == ["-m", "pip"] and "download" in commands[0]
    # nothing else was fetched into the cache (the example script was kept under examples/)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "sdist", f"sdist/horovod-{bh.HOROVOD_VERSION}.tar.gz"]


def test_the_set_up_scripts_have_no_other_way_out() -> None:
    tree = ast.parse((SCRIPTS / "build_horovod.py").read_text())
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names]
    imported += [node.module or "" for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)]
    assert [m for m in imported if m.split(".")[0] in NETWORK_MODULES] == []
    for script in ("build_horovod.py", "setup.sh"):
        text = (SCRIPTS / script).read_text()
        assert re.findall(r"https?://\S+", text) == [], script
        assert re.findall(r"\b(curl|wget|git clone)\b", text) == [], script
