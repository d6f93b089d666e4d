"""Cluster planning: hostfile grammar, host sources, selection and rank placement.

Pure standard-library code with no I/O beyond reading the files it is pointed at, so that
``hvdtrain plan`` and ``hvdtrain hosts check`` answer in milliseconds and tests can table-test
every rule. Nothing here imports another hvdtrain package, only ``errors`` and ``types``.
"""
