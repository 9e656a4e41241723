"""What a careful user reaches for instead of a learned controller, as public Keras tools.

- :mod:`~fitpilot.baselines.lr_finder`: the learning-rate range test (fastai's ``lr_find``
  and ``valley`` rule) as a function and as a callback;
- :mod:`~fitpilot.baselines.prodigy`: Prodigy, Adam whose step size estimates itself;
- :mod:`~fitpilot.baselines.greedy_lr`: GreedyLR (Subramanian et al. 2025, as transformers
  implements it), a callback that raises the learning rate after an improvement of the
  monitored loss and lowers it otherwise;
- :mod:`~fitpilot.baselines.adalrs`: AdaLRS (Dong et al., NeurIPS 2025), a callback that
  raises the learning rate while the fitted loss-descent velocity improves and rolls a
  failed raise back (weights and optimizer state) to a lower rate.

The two rules share :mod:`~fitpilot.baselines._rule_callback` (monitor, best-weight restore,
the per-epoch record), as Keras' own callbacks share ``MonitorCallback``.

Each runs in any ``model.fit`` on Keras 3's TensorFlow, JAX and torch backends. The
benchmark (:mod:`fitpilot.experiments.strategies`) trains them as strategies against the
learned controller.

May import: ``fitpilot.controller`` (its learning-rate helpers) and the ground modules
(``fitpilot.errors``); never envs, agents, experiments, torch or stable-baselines3. The
controller never imports this package (``tests/test_layers.py``).
"""
