"""PyTorch: adapter, built-in models."""
