"""The built image: its size, its labels against what is really inside, its user."""

from __future__ import annotations

import json

import pytest

from tests.helpers.image_lab import TEST_TIMEOUT_S, USER_ID, BuiltImage, Containers, note

pytestmark = pytest.mark.timeout(TEST_TIMEOUT_S)  # the first test waits for the builds

# The first image was 8.05 GB because pip had chosen torch's CUDA build; the CPU image is about
# 2.7 GB (docs/CONTAINERS.md). Far above that, something big came back.
MAX_SIZE_BYTES = 4_000_000_000


def test_the_image_builds_cold_and_warm_at_its_size(image: BuiltImage) -> None:
    """The session's builds succeeded (the fixture fails otherwise, with the build log's
    tail); their times and the size are printed at the end of the session."""
    assert image.size_bytes > 0
    assert image.size_bytes < MAX_SIZE_BYTES, (
        f"{image.name} is {image.size_bytes / 1e9:.2f} GB, over {MAX_SIZE_BYTES / 1e9:.0f} GB: "
        f"a CUDA torch build, or build tools left in the final stage?")


def test_labels_match_what_hvdtrain_env_reports_inside(image: BuiltImage,
                                                         containers: Containers) -> None:
    labels = image.labels()
    done = containers.run("labels", "--rm", "--network", "none", image.name, "env", "--json",
                          timeout=300)
    assert done.returncode == 0, f"hvdtrain env --json in the image exited {done.returncode}:\n" \
        f"{done.stderr[-2000:]}"
    report = json.loads(done.stdout)
    versions, mpi = report["versions"], report["mpi"] or ""
    checks = {
        "io.hvdtrain.torch": labels.get("io.hvdtrain.torch") == versions["torch"],
        "io.hvdtrain.tensorflow":
            labels.get("io.hvdtrain.tensorflow", "").endswith(" " + versions["tensorflow"]),
        "io.hvdtrain.horovod":
            labels.get("io.hvdtrain.horovod", "").startswith(versions["horovod"] + " "),
        "io.hvdtrain.mpi": mpi.replace("(", "").replace(")", "").replace("mpirun ", "")
            == labels.get("io.hvdtrain.mpi"),
        "torch is the CPU build": versions["torch"].endswith("+cpu"),
        "hvdtrain env found no problems": not report["problems"],
    }
    wrong = [what for what, ok in checks.items() if not ok]
    assert wrong == [], (f"label/contents mismatch: {', '.join(wrong)}\nlabels {labels}\n"
                         f"versions {versions}\nmpi {mpi!r}\nproblems {report['problems']}")
    note(f"labels match hvdtrain env: torch {versions['torch']}, tensorflow "
         f"{versions['tensorflow']}, horovod {versions['horovod']}, {mpi}")


def test_the_default_user_is_not_root(image: BuiltImage, containers: Containers) -> None:
    done = containers.run("whoami", "--rm", "--network", "none", image.name, "id", "-u",
                          timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, str(USER_ID)), (
        f"the image's default user should be uid {USER_ID}; `id -u` exited {done.returncode}: "
        f"{done.stdout.strip()!r} {done.stderr.strip()!r}")
