"""Keras 3 support for Horovod 0.28.1's TensorFlow API (horovod/horovod#4290).

Why this exists: Horovod's last release assumes Keras 2. Keras 3 variables have no ``.ref()``
(every variable map in ``horovod.tensorflow`` keys by it), its optimizers have no
``get_gradients`` / ``_aggregate_gradients`` hooks (so ``horovod.tensorflow.keras``'s
``DistributedOptimizer`` either fails or, worse, trains without averaging), ``variables`` is a
property, not a method, and there is no ``optimizer.lr``.

``scripts/build_horovod.py`` installs this file as ``horovod/tensorflow/keras3_compat.py``
and points Horovod's code at it with checked one-line edits; Horovod's own files are not copied.
What is here is written for Keras 3's public optimizer API: ``apply(grads, variables)`` (which
``apply_gradients`` calls), ``build(variables)``, ``variables``, ``learning_rate``.

Import-light on purpose: ``horovod.tensorflow.util`` imports ``ref`` while ``horovod.tensorflow``
is still initialising, so TensorFlow, Keras and Horovod are imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


class IdentityRef:
    """A hashable stand-in for ``tf.Variable.ref()`` for objects that have none (Keras 3
    variables): equal only to a ref of the very same object, which it keeps alive so its
    ``id`` cannot be reused while a map holds it."""

    __slots__ = ("_obj",)

    def __init__(self, obj: Any) -> None:
        self._obj = obj

    def __hash__(self) -> int:
        return id(self._obj)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdentityRef) and other._obj is self._obj

    def deref(self) -> Any:
        return self._obj


def ref(var: Any) -> Any:
    """``var.ref()`` where the variable has one (tf.Variable, Keras 2); for a Keras 3 variable
    the ref of the tf.Variable behind it (so either spelling finds the same entry); else an
    identity ref."""
    method = getattr(var, "ref", None)
    if callable(method):
        return method()
    backing = getattr(var, "_value", None)
    method = getattr(backing, "ref", None)
    return method() if callable(method) else IdentityRef(var)


def tf_variables(variables: Any) -> list[Any]:
    """The ``tf.Variable`` behind each Keras 3 variable (others as they are). Horovod passes
    variables into a ``tf.function`` to assign them; a Keras 3 variable arrives there as a
    plain tensor, which has no ``assign``."""
    import tensorflow as tf

    out = []
    for var in variables:
        backing = getattr(var, "_value", None)  # keras.Variable's storage on the TF backend
        out.append(backing if not isinstance(var, tf.Variable)
                   and isinstance(backing, tf.Variable) else var)
    return out


def is_variable(obj: Any) -> bool:
    """A ``tf.Variable`` or a Keras 3 variable (which is not a ``tf.Variable``)."""
    import tensorflow as tf

    if isinstance(obj, tf.Variable):
        return True
    if not is_keras3():
        return False
    import keras

    return isinstance(obj, keras.Variable)


def is_keras3() -> bool:
    import keras

    return int(keras.__version__.split(".")[0]) >= 3


def is_keras3_optimizer(optimizer: Any) -> bool:
    if not is_keras3():
        return False
    import keras

    return isinstance(optimizer, keras.optimizers.Optimizer)


# ---------------------------------------------------------------- callbacks' optimizer access


def optimizer_variables(optimizer: Any) -> list[Any]:
    """The optimizer's variables: a property in Keras 3, a method in Keras 2."""
    variables = optimizer.variables
    return list(variables() if callable(variables) else variables)


def get_lr(backend: Any, optimizer: Any) -> float:
    if hasattr(optimizer, "lr"):  # Keras 2
        return float(backend.get_value(optimizer.lr))
    import numpy as np

    return float(np.asarray(optimizer.learning_rate))


def set_lr(backend: Any, optimizer: Any, value: float) -> None:
    if hasattr(optimizer, "lr"):  # Keras 2
        backend.set_value(optimizer.lr, value)
    else:  # Keras 3: assigns the learning-rate variable the compiled step reads
        optimizer.learning_rate = value


def momentum_is_settable(optimizer: Any) -> bool:
    """Momentum correction needs momentum to be a variable (Keras 2). Keras 3's SGD keeps a
    Python float that the compiled train step has already baked in: changing it would do
    nothing, so the correction is skipped there."""
    return hasattr(getattr(optimizer, "momentum", None), "assign")


# ---------------------------------------------------------------- DistributedOptimizer


class _HorovodState:
    """Per-optimizer Horovod settings and the gradient reduction itself."""

    def __init__(self, allreduce_grads: Callable[..., Any], process_set: Any,
                 scale_local_gradients: bool, backward_passes_per_step: int,
                 average_aggregated_gradients: bool, sparse_as_dense: bool) -> None:
        self.allreduce_grads = allreduce_grads
        self.process_set = process_set
        self.scale_local_gradients = scale_local_gradients
        self.backward_passes_per_step = backward_passes_per_step
        self.average_aggregated_gradients = average_aggregated_gradients
        self.sparse_as_dense = sparse_as_dense
        self.local_vars: set[Any] = set()
        self.accumulators: list[Any] = []
        self.counter: Any = None

    def reduce(self, grads: Sequence[Any], variables: Sequence[Any]) -> list[Any]:
        """Average (Horovod's ``op``) every gradient across ranks except those of registered
        local variables, which are kept (divided by the set's size, as Horovod does)."""
        out = list(grads)
        shared = [i for i, (g, v) in enumerate(zip(grads, variables, strict=True))
                  if g is not None and ref(v) not in self.local_vars]
        reduced = self.allreduce_grads([grads[i] for i in shared],
                                       tf_variables([variables[i] for i in shared]))
        for i, grad in zip(shared, reduced, strict=True):
            out[i] = grad
        if self.scale_local_gradients and self.local_vars:
            import tensorflow as tf

            size = self.process_set.size()
            for i, (g, v) in enumerate(zip(grads, variables, strict=True)):
                if g is not None and ref(v) in self.local_vars:
                    out[i] = (tf.IndexedSlices(g.values / size, g.indices, g.dense_shape)
                              if isinstance(g, tf.IndexedSlices) else g / size)
        return out

    def build_accumulators(self, variables: Sequence[Any]) -> None:
        import tensorflow as tf

        if self.backward_passes_per_step <= 1 or self.accumulators:
            return
        # Plain tf.Variables, not Keras optimizer variables: they are transient per-step state
        # and must not change what the optimizer saves (a saved model loads without Horovod).
        self.accumulators = [tf.Variable(tf.zeros(v.shape, dtype=v.dtype), trainable=False,
                                         name="hvd_accumulated_grad") for v in variables]
        self.counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="hvd_passes")


def create_distributed_optimizer(optimizer: Any, name: str | None, device_dense: str,
                                 device_sparse: str, compression: Any, sparse_as_dense: bool,
                                 gradient_predivide_factor: float, op: Any,
                                 backward_passes_per_step: int = 1,
                                 average_aggregated_gradients: bool = False,
                                 groups: Any = None, process_set: Any = None,
                                 scale_local_gradients: bool = True) -> Any:
    """A copy of ``optimizer`` (same class name and config, so a saved model loads without
    Horovod) whose ``apply`` averages the gradients across ranks first.

    ``apply`` is Keras 3's one entry point: ``apply_gradients`` and ``model.fit``'s train step
    both go through it, in eager mode and inside ``tf.function``. Averaging before Keras'
    own processing keeps Horovod's order: loss-scale check, clipping, weight decay and the
    update all see the averaged gradient, identically on every rank.

    ``backward_passes_per_step > 1`` sums gradients locally and reduces and applies only on
    every n-th call (divided by n if ``average_aggregated_gradients``); ``iterations`` counts
    applied updates. ``from_config`` on the result (or its class) gives another optimizer
    with the same Horovod settings, as Horovod's Keras 2 one does.
    """
    import horovod.tensorflow as hvd
    import tensorflow as tf

    if process_set is None:
        process_set = hvd.global_process_set
    if backward_passes_per_step < 1:
        raise ValueError("backward_passes_per_step must be >= 1")
    base = type(optimizer)
    label = name or f"Distributed{base.__name__}"
    allreduce_grads = hvd._make_allreduce_grads_fn(
        label, device_dense, device_sparse, compression, sparse_as_dense, op,
        gradient_predivide_factor, groups, process_set=process_set)

    def build(self: Any, variables: Any) -> None:
        base.build(self, variables)
        self._hvd.build_accumulators(list(variables))

    def apply(self: Any, grads: Any, trainable_variables: Any = None) -> Any:
        state: _HorovodState = self._hvd
        grads = list(grads)
        variables = (list(trainable_variables) if trainable_variables is not None
                     else list(self._trainable_variables))
        if state.sparse_as_dense or state.backward_passes_per_step > 1:
            grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g
                     for g in grads]
        if state.backward_passes_per_step == 1:
            return base.apply(self, state.reduce(grads, variables), trainable_variables)
        if not self.built:
            self.build(variables)
        index = {ref(v): i for i, v in enumerate(self._trainable_variables)}
        accumulators = [state.accumulators[index[ref(v)]] for v in variables]
        for acc, grad in zip(accumulators, grads, strict=True):
            if grad is not None:
                acc.assign_add(tf.cast(grad, acc.dtype))
        passes = state.counter.assign_add(1)

        def reduce_and_apply() -> Any:
            n = state.backward_passes_per_step
            summed = [None if g is None else
                      (acc.read_value() / n if state.average_aggregated_gradients
                       else acc.read_value())
                      for g, acc in zip(grads, accumulators, strict=True)]
            base.apply(self, state.reduce(summed, variables), trainable_variables)
            for acc in accumulators:
                acc.assign(tf.zeros_like(acc))
            state.counter.assign(0)
            return tf.constant(True)

        tf.cond(tf.equal(passes, state.backward_passes_per_step), reduce_and_apply,
                lambda: tf.constant(False))
        return None

    def register_local_var(self: Any, var: Any) -> None:
        """Keep this variable's gradient local to each rank (not averaged)."""
        self._hvd.local_vars.add(ref(var))

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        # Every instance, ``from_config`` copies included, is distributed with these settings
        # (local variables are per instance: a copy starts with none).
        base.__init__(self, *args, **kwargs)
        self._hvd = _HorovodState(allreduce_grads, process_set, scale_local_gradients,
                                  backward_passes_per_step, average_aggregated_gradients,
                                  sparse_as_dense)

    namespace = {"__init__": __init__, "build": build, "apply": apply,
                 "register_local_var": register_local_var,
                 "__module__": base.__module__, "__qualname__": base.__qualname__,
                 "__doc__": base.__doc__}
    cls: Any = type(base.__name__, (base,), namespace)
    return cls.from_config(optimizer.get_config())


def load_model(keras: Any, wrap_optimizer: Callable[[type], Callable[..., Any]], filepath: Any,
               custom_optimizers: Sequence[type] | None,
               custom_objects: dict[str, Any] | None) -> Any:
    """Load a model as Keras 3 does, then swap its optimizer for a Horovod one that carries
    the loaded optimizer state (slots, iterations, learning rate) over."""
    objects = dict(custom_objects or {})
    for cls in custom_optimizers or ():
        objects.setdefault(cls.__name__, cls)
    model = keras.models.load_model(filepath, custom_objects=objects)
    loaded = getattr(model, "optimizer", None)
    if loaded is None or hasattr(loaded, "_hvd"):
        return model
    # Horovod's wrap_optimizer(cls) gives ``lambda **kw: DistributedOptimizer(cls(**kw), ...)``;
    # a factory returning the loaded optimizer keeps its own from_config (schedules included).
    distributed = wrap_optimizer(lambda **_: loaded)()  # type: ignore[arg-type]
    if loaded.built:
        distributed.build(model.trainable_variables)
        for target, source in zip(optimizer_variables(distributed),
                                  optimizer_variables(loaded), strict=True):
            target.assign(source)
    model.optimizer = distributed
    return model
