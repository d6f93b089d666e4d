"""Built-in Keras 3 models, the same architectures as ``torch_models`` (sized from the data)."""

from __future__ import annotations

from typing import Any

from hvdtrain.errors import ConfigError
from hvdtrain.frameworks.model_rules import check_model_fits
from hvdtrain.frameworks.user_model import build_user_model
from hvdtrain.training.data import TEXT_LENGTH, TEXT_VOCAB, Dataset


def build_model(name: str, data: Dataset) -> Any:
    import keras
    from keras import layers

    check_model_fits(name, data)
    outputs = data.num_outputs
    if ":" in name:
        return build_user_model(name, data, keras.Model, "keras.Model")
    if name == "transformer":
        tokens = keras.Input((TEXT_LENGTH,), dtype="int64")
        pad = keras.ops.equal(tokens, 0)
        hidden = layers.Embedding(TEXT_VOCAB, 64)(tokens)
        hidden = hidden + positional_embedding()(hidden)
        keep = keras.ops.expand_dims(keras.ops.cast(keras.ops.logical_not(pad), "float32"), -1)
        attention_mask = keras.ops.logical_and(keras.ops.expand_dims(~pad, 1),
                                               keras.ops.expand_dims(~pad, 2))
        for _ in range(2):
            attended = layers.MultiHeadAttention(4, 16)(hidden, hidden,
                                                        attention_mask=attention_mask)
            hidden = layers.LayerNormalization(epsilon=1e-5)(hidden + attended)
            ff = layers.Dense(64)(layers.Dense(128, activation="relu")(hidden))
            hidden = layers.LayerNormalization(epsilon=1e-5)(hidden + ff)
        pooled = keras.ops.sum(hidden * keep, 1) / keras.ops.maximum(keras.ops.sum(keep, 1), 1.0)
        return keras.Model(tokens, layers.Dense(outputs)(pooled))
    if name == "mlp":
        return keras.Sequential([
            keras.Input((data.num_features,)),
            layers.Dense(256, activation="relu"),
            layers.Dense(256, activation="relu"),
            layers.Dense(outputs),
        ])
    if name == "cnn" and data.image_shape is not None:
        channels, height, width = data.image_shape
        return keras.Sequential([
            keras.Input((data.num_features,)),
            layers.Reshape((channels, height, width)),
            layers.Permute((2, 3, 1)),  # channels last, as Keras convolutions want
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(outputs),
        ])
    raise ConfigError(f"unknown model {name!r}")


def _positional_embedding_class() -> Any:
    import keras

    class _PositionalEmbedding(keras.layers.Layer):
        """A learned position vector per token slot (like the torch model's parameter)."""

        def build(self, input_shape: Any) -> None:
            self.position = self.add_weight(shape=(1, input_shape[1], input_shape[2]),
                                            initializer="zeros", name="position")

        def call(self, inputs: Any) -> Any:
            return keras.ops.broadcast_to(self.position, keras.ops.shape(inputs))

    return _PositionalEmbedding


def positional_embedding() -> Any:
    return _positional_embedding_class()()
