"""What a careful user reaches for instead of a learned controller, as public Keras tools.

- :mod:`~fitpilot.baselines.lr_finder`: the learning-rate range test (fastai's ``lr_find``
  and ``valley`` rule) as a function and as a callback;
- :mod:`~fitpilot.baselines.prodigy`: Prodigy, Adam whose step size estimates itself.

Each runs in any ``model.fit`` on Keras 3's TensorFlow, JAX and torch backends. The
benchmark (:mod:`fitpilot.experiments.strategies`) trains them as strategies against the
learned controller.

May import: ``fitpilot.controller`` (its learning-rate helpers) and the ground modules
(``fitpilot.errors``); never envs, agents, experiments, torch or stable-baselines3. The
controller never imports this package (``tests/test_layers.py``).
"""
