"""The container image, built with podman and checked end to end (``make image-test``).

The image and the containers live in tests/helpers/image_lab.py; their session fixtures are
registered here, for this directory only: the image is built once per session, and every
container and network a test made is removed at its end. After the session the image's size,
its cold and warm build times and what the checks saw are printed (docs/CONTAINERS.md).
"""

from __future__ import annotations

import pytest

from tests.helpers import image_lab
from tests.helpers.image_lab import containers, image  # noqa: F401  (the fixtures)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if image_lab.REPORT:
        terminalreporter.write_sep("=", f"hvdtrain image: {image_lab.IMAGE}")
        for line in image_lab.REPORT:
            terminalreporter.write_line(line)
