"""``python -m hvdtrain`` is the ``hvdtrain`` command (ranks are started this way)."""

from hvdtrain.cli import main

main()
