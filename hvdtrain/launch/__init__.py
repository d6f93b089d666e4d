"""Launching ranks: pure argv builders, the rank wrapper, and the supervising runner."""
