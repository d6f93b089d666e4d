"""Framework adapters behind the ``types.FrameworkAdapter`` Protocol, one subpackage each.

A rank imports exactly one framework. Each subpackage holds its adapter, its built-in models
(one builder per ``catalog.MODELS`` name) and its binding of the comm seam (how a NumPy vector
becomes its tensor, its half of the overflow-safe fp16 compression).
"""
