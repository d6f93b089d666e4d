"""The container image under test: podman, a local Debian base, the build, and containers that
are removed however the session ends (tests/image, ``make image-test``; docs/CONTAINERS.md).

The session fixture ``image`` (registered in tests/image/conftest.py) installs what is missing
(``podman runc debootstrap`` from apt; ``default_ulimits = []`` in containers.conf, as this
sandbox lacks CAP_SYS_RESOURCE), builds a local Debian base with debootstrap once (no registry
image can be pulled on this project's machines; kept as ``BASE``), then builds
``docker/Dockerfile`` cold (no layer cache) and warm, once per session, from a snapshot of the
build context. Builds use the host network and this machine's pip configuration, mounted
read-only, plus the Horovod wheel cache (``~/.cache/hvdtrain`` at ``/cache``), so the image does
not recompile Horovod. The timings and the size go to ``REPORT``, which tests/image prints at
the end of the session.

The session fixture ``containers`` names every container and network a test makes and removes
them once at the end (tests/helpers/teardown.py: finalizer, atexit, SIGTERM). Containers run
with ``--runtime runc`` (crun refuses this host's hybrid cgroup layout) and, unless a test
says otherwise, ``--network none``; the two-host tests use an ``--internal`` podman network of
their own.

Variables: ``HVDTRAIN_TEST_IMAGE`` (default localhost/hvdtrain:test), ``HVDTRAIN_TEST_BASE``
(localhost/hvdtrain-base:bookworm), ``HVDTRAIN_IMAGE_TEST_COLD`` (1: also time a build without
the layer cache; 0: warm build only), ``HVDTRAIN_IMAGE_TEST_BUILD`` (0: use the existing image
as it is, build only if it is missing; for rerunning some checks with ``-k``),
``HVDTRAIN_TORCH_INDEX_URL`` (the image's TORCH_INDEX_URL build argument; default empty:
pip's own configuration, mounted into the build, supplies torch+cpu).

Needs root (apt, /etc/containers, volumes chowned to the image's uid 1000); skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from tests.helpers.jobs import REPO, clean_env, finish, spawn
from tests.helpers.teardown import register_teardown

IMAGE = os.environ.get("HVDTRAIN_TEST_IMAGE", "localhost/hvdtrain:test")
BASE = os.environ.get("HVDTRAIN_TEST_BASE", "localhost/hvdtrain-base:bookworm")
COLD = os.environ.get("HVDTRAIN_IMAGE_TEST_COLD", "1") == "1"
BUILD = os.environ.get("HVDTRAIN_IMAGE_TEST_BUILD", "1") != "0"
TORCH_INDEX_URL = os.environ.get("HVDTRAIN_TORCH_INDEX_URL", "")
DOCKERFILE = "docker/Dockerfile"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hvdtrain"
# What the build context needs (the Dockerfile copies less; .dockerignore keeps the rest out).
CONTEXT_PATHS = ("pyproject.toml", "README.md", ".dockerignore", "scripts", "hvdtrain", "docker")
CONTAINERS_CONF = Path("/etc/containers/containers.conf")
TOOLS = ("podman", "runc", "debootstrap")
RUNTIME = ("--runtime", "runc")
USER_ID = 1000  # the image's user (docker/Dockerfile: USER 1000:1000)

# A module's tests may take this long in all, the session's builds included (a cold build is
# about 5.5 min here, more on a busy machine or when Horovod must be compiled). Every command
# has its own, shorter timeout below.
TEST_TIMEOUT_S = 3600
INSTALL_TIMEOUT_S = 900
BASE_TIMEOUT_S = 900
BUILD_TIMEOUT_S = 1800
PODMAN_TIMEOUT_S = 120  # a podman command that starts or inspects, not a job
LOG_TAIL = 40  # lines of a failed build's log in the failure message

# Lines printed after the session (tests/image/conftest.py): timings, size, what checks saw.
REPORT: list[str] = []


def note(line: str) -> None:
    """Add ``line`` to the report printed at the end of the session."""
    REPORT.append(line)


def podman(*args: str, timeout: float = PODMAN_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """``podman ARGS`` to completion, in its own process group (killed on a hang, which fails
    the test with what it printed)."""
    return finish(spawn(["podman", *args], clean_env(), stdin=subprocess.DEVNULL), timeout)


def _run(argv: Sequence[str], timeout: float,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A setup command (apt-get, debootstrap, pip config): its own timeout, no stdin."""
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False, env=env)


def _tail(text: str, lines: int = LOG_TAIL) -> str:
    return "\n".join(text.splitlines()[-lines:])


# -- tools ------------------------------------------------------------------------------------
def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return ("the image tests need root (apt-get, /etc/containers, volumes owned by the "
                "image's uid 1000)")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing and shutil.which("apt-get") is None:
        return f"{' '.join(missing)} missing and no apt-get to install them"
    return None


def ensure_tools() -> None:
    """podman, runc, debootstrap from apt if missing; podman's default rlimits off."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        env = clean_env(DEBIAN_FRONTEND="noninteractive")
        for argv in (["apt-get", "update", "-qq"],
                     ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]):
            done = _run(argv, INSTALL_TIMEOUT_S, env=env)
            assert done.returncode == 0, \
                f"{' '.join(argv)} exited {done.returncode}:\n{_tail(done.stdout + done.stderr)}"
        note(f"installed with apt-get: {' '.join(missing)}")
    # The sandbox lacks CAP_SYS_RESOURCE: podman's default rlimits would fail every container.
    text = CONTAINERS_CONF.read_text() if CONTAINERS_CONF.exists() else ""
    lines = text.splitlines()
    if not any(line.strip().startswith("default_ulimits") for line in lines):
        CONTAINERS_CONF.parent.mkdir(parents=True, exist_ok=True)
        if "[containers]" in (line.strip() for line in lines):
            at = [line.strip() for line in lines].index("[containers]") + 1
            lines.insert(at, "default_ulimits = []")
        else:
            lines += ["[containers]", "default_ulimits = []"]
        CONTAINERS_CONF.write_text("\n".join(lines) + "\n")
        note(f"set default_ulimits = [] in {CONTAINERS_CONF}")


# -- the local base image ---------------------------------------------------------------------
def debian_mirror() -> str:
    """This machine's Debian mirror for bookworm (its apt sources), else deb.debian.org."""
    deb822 = Path("/etc/apt/sources.list.d/debian.sources")
    if deb822.exists():
        for stanza in deb822.read_text().split("\n\n"):
            fields = dict(line.split(":", 1) for line in stanza.splitlines()
                          if ":" in line and not line.startswith(("#", " ")))
            if "bookworm" in fields.get("Suites", "").split() and fields.get("URIs"):
                return fields["URIs"].split()[0]
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            words = [w for w in line.split() if not w.startswith("[") and not w.endswith("]")]
            if len(words) >= 3 and words[0] == "deb" and words[2] == "bookworm":
                return words[1]
    return "http://deb.debian.org/debian"


def ensure_base(work: Path) -> None:
    """``BASE``: Debian bookworm (minbase, python3, venv, headers) from debootstrap, once."""
    if podman("image", "exists", BASE).returncode == 0:
        note(f"base {BASE}: cached")
        return
    started = time.monotonic()
    rootfs = work / "rootfs"
    mirror = debian_mirror()
    boot = _run(["debootstrap", "--variant=minbase",
                 "--include=python3,python3-venv,python3-dev,ca-certificates",
                 "bookworm", str(rootfs), mirror], BASE_TIMEOUT_S)
    assert boot.returncode == 0, \
        f"debootstrap from {mirror} exited {boot.returncode}:\n{_tail(boot.stdout + boot.stderr)}"
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (rootfs / cache).glob("*"):
            if path.is_file():
                path.unlink()
    imported = _run(["bash", "-o", "pipefail", "-c",
                     f"tar -C {shlex.quote(str(rootfs))} -c . | podman import "
                     f"--change 'CMD [\"/bin/bash\"]' - {shlex.quote(BASE)}"], BASE_TIMEOUT_S)
    shutil.rmtree(rootfs, ignore_errors=True)
    assert imported.returncode == 0, f"podman import of the debootstrapped base failed:\n" \
        f"{_tail(imported.stdout + imported.stderr)}"
    note(f"base image (debootstrap + import): {time.monotonic() - started:.0f} s")


# -- the build --------------------------------------------------------------------------------
def pip_mounts() -> list[str]:
    """pip's configuration on this machine: its config files and every local path they name
    (find-links, file:// indexes, constraints, the CA bundle), to mount read-only."""
    pip = [sys.executable, "-m", "pip"]
    paths: list[str] = []
    debug = _run([*pip, "config", "debug"], 60).stdout
    for line in debug.splitlines():
        line = line.strip()
        if line.endswith(", exists: True"):
            paths.append(line.removesuffix(", exists: True"))
    for line in _run([*pip, "config", "list"], 60).stdout.splitlines():
        for word in " ".join(shlex.split(line.partition("=")[2])).split():
            if word.startswith("file:"):
                word = unquote(urlparse(word).path).rstrip("/")
                if os.path.basename(word) == "simple":  # a PEP 503 tree: files lie beside it
                    word = os.path.dirname(word)
            if word.startswith("/") and os.path.exists(word):
                paths.append(word)
    return list(dict.fromkeys(paths))


def snapshot_context(target: Path) -> Path:
    """A copy of what the build reads, so that files edited meanwhile (other work in this
    tree) cannot change what the cold and the warm build see."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in CONTEXT_PATHS:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=ignore, symlinks=True)
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def image_id(name: str) -> str:
    done = podman("image", "inspect", "-f", "{{.Id}}", name)
    return done.stdout.strip() if done.returncode == 0 else ""


def build_image(label: str, context: Path, logs: Path, *flags: str,
                dockerfile: str = DOCKERFILE, tag: str = IMAGE) -> float:
    """``podman build`` of ``dockerfile`` (on ``BASE``) into ``tag``; its seconds. The log
    goes to ``logs/build-LABEL.log``; a failed build fails with its tail."""
    mounts = [arg for path in pip_mounts() for arg in ("-v", f"{path}:{path}:ro")]
    CACHE.mkdir(parents=True, exist_ok=True)
    argv = ["podman", "build", *RUNTIME, "--network", "host", "--format", "docker", *flags,
            "-f", str(context / dockerfile), "--build-arg", f"BASE_IMAGE={BASE}",
            "--build-arg", f"TORCH_INDEX_URL={TORCH_INDEX_URL}",
            "-v", f"{CACHE}:/cache:ro", *mounts, "-t", tag, str(context)]
    started = time.monotonic()
    done = finish(spawn(argv, clean_env(), stdin=subprocess.DEVNULL), BUILD_TIMEOUT_S)
    seconds = time.monotonic() - started
    log = logs / f"build-{label}.log"
    log.write_text(done.stdout + done.stderr)
    assert done.returncode == 0, (f"the {label} build of {tag} ({dockerfile}) failed after "
                                  f"{seconds:.0f} s (log: {log}):\n"
                                  f"{_tail(done.stdout + done.stderr)}")
    return seconds


def drop_old_layers(since: float, old: str, tag: str = IMAGE) -> None:
    """Untagged layers made before ``since`` (earlier builds' caches, the image this build
    replaced). Left in place they also mislead the next build's cache lookup (buildah may pick
    an old copy of a step and then miss on the next one)."""
    if old and old != image_id(tag):
        podman("rmi", "-f", old)
    podman("image", "prune", "-f", "--filter", f"until={int(since)}")


@dataclass(frozen=True)
class BuiltImage:
    """The image the tests run: its name, size and how long its builds took (None: not
    built in this session)."""

    name: str
    size_bytes: int
    cold_build_s: float | None
    warm_build_s: float | None

    def inspect(self, template: str) -> str:
        done = podman("image", "inspect", "-f", template, self.name)
        assert done.returncode == 0, f"podman image inspect {self.name}: {done.stderr}"
        return done.stdout.strip()

    def labels(self) -> dict[str, str]:
        labels: dict[str, str] = json.loads(self.inspect("{{json .Config.Labels}}"))
        return labels


def build(work: Path, dockerfile: str = DOCKERFILE, tag: str = IMAGE,
          cold: bool = COLD) -> BuiltImage:
    """Build ``tag`` from ``dockerfile`` cold (without the layer cache; if ``cold``) and then
    warm; report the times and the size. (Another image of docker/ can reuse this with its
    own Dockerfile and tag.)"""
    old = image_id(tag)
    context = snapshot_context(work / "context")
    since = time.time()
    cold_s = None
    if cold:
        if old:
            podman("untag", tag)
        drop_old_layers(since, old, tag)
        cold_s = build_image("cold", context, work, "--no-cache", dockerfile=dockerfile, tag=tag)
        note(f"cold build of {dockerfile} (--no-cache): {cold_s:.0f} s")
    warm_s = build_image("warm", context, work, dockerfile=dockerfile, tag=tag)
    note(f"warm build of {dockerfile} (layer cache): {warm_s:.0f} s")
    drop_old_layers(since, old, tag)
    return BuiltImage(tag, _size(tag), cold_s, warm_s)


def _size(name: str) -> int:
    done = podman("image", "inspect", "-f", "{{.Size}}", name)
    assert done.returncode == 0, f"podman image inspect {name}: {done.stderr}"
    size = int(done.stdout.strip())
    note(f"image size: {size / 1e6:,.0f} MB ({size:,} bytes): {name}")
    return size


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    """``docker/Dockerfile`` built once per session (or, with HVDTRAIN_IMAGE_TEST_BUILD=0,
    the existing ``IMAGE``)."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    ensure_tools()
    work = tmp_path_factory.mktemp("image-build")
    ensure_base(work)
    return build_or_reuse(work)


def build_or_reuse(work: Path, dockerfile: str = DOCKERFILE, tag: str = IMAGE,
                   cold: bool = COLD) -> BuiltImage:
    """``build``, or with HVDTRAIN_IMAGE_TEST_BUILD=0 the existing ``tag`` (built if missing)."""
    if not BUILD and image_id(tag):
        note(f"using the existing {tag} (HVDTRAIN_IMAGE_TEST_BUILD=0): no build")
        return BuiltImage(tag, _size(tag), None, None)
    return build(work, dockerfile, tag, cold)


# -- containers -------------------------------------------------------------------------------
@dataclass
class Containers:
    """Every container and network of the session, named ``PREFIX-SUFFIX``."""

    prefix: str
    names: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)

    def name(self, suffix: str) -> str:
        """The name of our container (or network) ``suffix``."""
        return f"{self.prefix}-{suffix}"

    def run_argv(self, suffix: str, *args: str) -> list[str]:
        """``podman run`` of a named container of ours (removed at the end of the session)."""
        name = self.name(suffix)
        self.names.append(name)
        return ["podman", "run", *RUNTIME, "--name", name, *args]

    def run(self, suffix: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        """``podman run --name PREFIX-SUFFIX ARGS`` to completion; a hang fails the test."""
        argv = self.run_argv(suffix, *args)
        return finish(spawn(argv, clean_env(), stdin=subprocess.DEVNULL), timeout)

    def start(self, suffix: str, *args: str) -> subprocess.Popen[str]:
        """``podman run`` attached, in the background: ``finish`` it, or poll while it runs."""
        return spawn(self.run_argv(suffix, *args), clean_env(), stdin=subprocess.DEVNULL)

    def exec(self, suffix: str, *argv: str) -> subprocess.Popen[str]:
        """``podman exec`` into our container ``suffix``, in the background."""
        return spawn(["podman", "exec", self.name(suffix), *argv], clean_env(),
                     stdin=subprocess.DEVNULL)

    def network(self, suffix: str, *flags: str) -> str:
        name = self.name(suffix)
        self.networks.append(name)
        done = podman("network", "create", *flags, name)
        assert done.returncode == 0, f"podman network create {name}: {done.stderr}"
        return name

    def remove_all(self) -> None:
        for name in self.names:
            _run(["podman", "rm", "-f", "-t", "0", name], PODMAN_TIMEOUT_S)
        for name in self.networks:
            _run(["podman", "network", "rm", "-f", name], PODMAN_TIMEOUT_S)


@pytest.fixture(scope="session")
def containers(request: pytest.FixtureRequest) -> Iterator[Containers]:
    found = Containers(prefix=f"hvdtrain-test-{os.getpid()}")
    register_teardown(request, found.remove_all)
    yield found
