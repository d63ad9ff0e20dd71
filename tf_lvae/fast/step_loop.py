"""Several train steps in one XLA call: Keras' steps_per_execution without the per-step launch.

Keras runs steps_per_execution > 1 as a TF while loop that launches the XLA-compiled step once
per step, and each launch costs time before and after the step's own work (argument buffers
for the ~300 weights, optimizer slots and metric variables; docs/PERFORMANCE.md). Here the
loop itself is inside the XLA program: the batches of one call are fetched and stacked first,
then one XLA while loop runs `model.train_step` on each in turn. The same steps run in the
same order on the same data, so weights, noise and metrics are those of one step per call
(tests/test_step_loop.py).

Used only where it is that simple: XLA on, no tf.distribute strategy (replicas go through
Keras' own loop), tf.data iterators whose batches have static shapes (to stack them).
"""
import tensorflow as tf


def applies(model):
    """Whether `model`'s train function can be the fused loop (see the module docstring)."""
    return (model.steps_per_execution > 1 and bool(model.jit_compile)
            and not model.run_eagerly and not tf.distribute.has_strategy()
            and model._distribute_strategy is None)


def _static(spec):
    return all(s.shape.is_fully_defined() for s in tf.nest.flatten(spec))


def fused_train_function(model, keras_function):
    """train_function(iterator) -> logs running `model.steps_per_execution` train steps in one
    XLA call; other iterators (Python ones from train_on_batch, dynamic shapes) go to
    `keras_function`, Keras' own. Raises StopIteration when the iterator has no batch left.
    """
    num_steps = int(model.steps_per_execution)

    @tf.function(jit_compile=True, reduce_retracing=True)
    def run_steps(batches, count):
        def body(index, logs):
            return index + 1, model.train_step(tf.nest.map_structure(lambda b: b[index],
                                                                     batches))
        # The initial logs only fix the loop's structure: every call runs >= 1 step.
        _, logs = tf.while_loop(lambda index, logs: index < count, body,
                                (tf.constant(0), model._step_results()),
                                maximum_iterations=num_steps)
        return logs

    @tf.function(reduce_retracing=True)
    def fetch_and_run(iterator):
        optionals = [iterator.get_next_as_optional() for _ in range(num_steps)]
        # Batches left in the iterator, up to num_steps (the last call of a dataset may
        # have fewer; the missing ones are zeros that no step reads).
        count = tf.add_n([tf.cast(o.has_value(), tf.int32) for o in optionals])

        def run():
            first = optionals[0].get_value()
            zeros = tf.nest.map_structure(tf.zeros_like, first)
            batches = [first] + [tf.cond(o.has_value(), o.get_value, lambda: zeros)
                                 for o in optionals[1:]]
            return run_steps(tf.nest.map_structure(lambda *b: tf.stack(b), *batches), count)

        return count, tf.cond(count > 0, run, model._step_results)

    def function(iterator):
        if not (isinstance(iterator, tf.data.Iterator) and _static(iterator.element_spec)):
            return keras_function(iterator)
        count, logs = fetch_and_run(iterator)
        if int(count) == 0:
            raise StopIteration
        return logs

    return function
