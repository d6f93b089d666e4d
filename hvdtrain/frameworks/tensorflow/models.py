"""Built-in Keras 3 models, the same architectures as the torch ones (sized from the data).

One builder per ``catalog.MODELS`` name, in ``BUILDERS``; ``frameworks.models.build_model``
checks the fit and handles users' factories.
"""

from __future__ import annotations

from typing import Any

from hvdtrain.frameworks.models import Builder
from hvdtrain.types import TEXT_LENGTH, TEXT_VOCAB, Dataset


def mlp(data: Dataset) -> Any:
    import keras
    from keras import layers

    return keras.Sequential([
        keras.Input((data.num_features,)),
        layers.Dense(256, activation="relu"),
        layers.Dense(256, activation="relu"),
        layers.Dense(data.num_outputs),
    ])


def cnn(data: Dataset) -> Any:
    import keras
    from keras import layers

    assert data.image_shape is not None  # checked by build_model (catalog: image data only)
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
        layers.Dense(data.num_outputs),
    ])


def transformer(data: Dataset) -> Any:
    import keras
    from keras import layers

    tokens = keras.Input((TEXT_LENGTH,), dtype="int64")
    pad = keras.ops.equal(tokens, 0)
    hidden = layers.Embedding(TEXT_VOCAB, 64)(tokens)
    hidden = hidden + positional_embedding()(hidden)
    keep = keras.ops.expand_dims(keras.ops.cast(keras.ops.logical_not(pad), "float32"), -1)
    attention_mask = keras.ops.logical_and(keras.ops.expand_dims(~pad, 1),
                                           keras.ops.expand_dims(~pad, 2))
    for _ in range(2):
        attended = layers.MultiHeadAttention(4, 16)(hidden, hidden, attention_mask=attention_mask)
        hidden = layers.LayerNormalization(epsilon=1e-5)(hidden + attended)
        ff = layers.Dense(64)(layers.Dense(128, activation="relu")(hidden))
        hidden = layers.LayerNormalization(epsilon=1e-5)(hidden + ff)
    pooled = keras.ops.sum(hidden * keep, 1) / keras.ops.maximum(keras.ops.sum(keep, 1), 1.0)
    return keras.Model(tokens, layers.Dense(data.num_outputs)(pooled))


BUILDERS: dict[str, Builder] = {"mlp": mlp, "cnn": cnn, "transformer": transformer}


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
