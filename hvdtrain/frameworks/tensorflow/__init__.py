"""TensorFlow 2 / Keras 3: adapter, built-in models."""
