"""The deployed side: what runs inside a user's ``model.fit``, on any Keras 3 backend.

What it holds: the featurizer (``features.py``, with ``weight_signals.py``; logs in,
observation out, the one contract with the environment), the scale probe of controller v3
(``probe.py``, on the ramp of ``ramp.py``), the action schemes (``actions.py``), the bundle
format (``bundle.py``), the numpy policy (``policy.py``), exact snapshots of a model's state
(``state.py``), and the callback, ``LearnedController`` (``callback.py``).

The path an epoch takes: Keras' epoch logs (and weights) -> ``Featurizer.observe`` ->
``ObservationPipeline`` (frame stack, normalisation) -> ``MLPPolicy.act`` ->
``DiscreteActions.decode`` -> the optimizer's rate, a rollback, or a stop.

May import: the ground modules (``fitpilot.errors``, ``fitpilot.keras_internals``...), Keras
and numpy; never baselines, envs, agents, experiments, torch or stable-baselines3.
"""
