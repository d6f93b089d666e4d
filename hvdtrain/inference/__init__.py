"""After training: evaluate, predict and export from a checkpoint alone.

A checkpoint carries everything these need (``card``): the framework, the model and its
training config, the data's shape and classes, and the standardisation statistics. ``inputs``
reads a data set for it in input order, in batches; ``runner`` is what each rank does
(evaluate: sums reduced across ranks; predict: rank 0 writes one file); ``exporting`` writes a
self-contained model plus a JSON sidecar. Nothing here imports a framework at module level: the
rank side loads exactly one, through ``catalog.FRAMEWORKS``' ``predictor``.
"""
