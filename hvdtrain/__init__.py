"""hvdtrain: data-parallel training on Horovod, from one hostfile to a trained model.

Importing this package is cheap on purpose: it pulls in no ML framework. Heavy imports
(torch, tensorflow, horovod) happen inside the rank processes that need them.
"""

__version__ = "0.1.0"
