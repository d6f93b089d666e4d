"""``python -m hvdtrain`` is the ``hvdtrain`` command (ranks are started this way)."""

from hvdtrain.commands import main

main()
