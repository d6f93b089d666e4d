"""``hvdtrain serve``: a trained model on the Open Inference Protocol (KServe V2), in a process
of its own. KServe's Python server gives the protocol (REST and gRPC), health and metrics;
this package adds what a model hvdtrain trained needs: the same preparation ``predict`` uses,
adaptive batching, readiness after a warm-up, and a drain on SIGTERM. Importing it imports
no framework and no KServe; the modules that need them import them on use.
"""
