"""Reading users' data files: one reader per format, for every caller.

Training (``training.datasets``), the launcher's check before any rank starts
(``train_launcher.validate``), evaluate/predict (``inference.inputs``) and the server all read
users' files through this package, so a file means the same thing and a problem is reported
with the same ``file:line`` message wherever it is read.

* ``csvfile``: the rows of a CSV file with a header, streamed, with their line numbers.
* ``jsonl``: the values of a JSON Lines file with their line numbers; text-and-label samples.
* ``tabular``: numeric features and a label column on top of ``csvfile``.
* ``npy``: ``.npy`` headers inside a ``.npz`` archive, checks of ``x``/``y``, values streamed in
  chunks, rows of ``x`` read in blocks (a row range).
* ``schema``: what the formats share: class labels as ids, what a finite float32 is, the hints.
* ``text``: labelled text for fine-tuning language models (``.jsonl``, ``.csv``, ``.tsv``).

Standard library and NumPy only (no ML framework, no Click): the launching host reads data
with it before any framework is imported. Importing this package imports nothing.
"""
