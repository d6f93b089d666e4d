"""The launcher's half of ``hvdtrain train``: what the launching process does around the ranks.

``training/`` is what runs inside a rank; this package is what the ``hvdtrain`` command itself
does for a training run, before and between launches, and never runs in a rank:

* ``validate``: everything the launching host can check before any rank starts (the data,
  the model, the checkpoint to resume, the disk space), as one line and an exit code;
* ``modelcheck``: the model check, run by ``validate`` in a subprocess with the rank's
  framework (``python -m hvdtrain.train_launcher.modelcheck``), so the launcher imports none;
* ``diskspace``: will the checkpoints fit? An estimate without a framework;
* ``restarts``: the restart policy (``--max-restarts``): relaunch after a failure, on which
  hosts, from which checkpoint.

It sits above ``training`` in the layers, because it reads data and checkpoints with the
ranks' own code (``training.datasets``, ``training.checkpoint``: one reader, the same
messages), and above ``launch``, whose supervisor and preflight the restart policy drives.
``tests/unit/test_layers.py`` keeps ``training`` from importing it.
"""
