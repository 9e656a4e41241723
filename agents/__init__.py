"""Training controller agents with stable-baselines3, and exporting them to bundles.

What it holds: the recipe (``config.py``: ``TrainConfig``, its checks), the training loop
(``train.py``: run folder, checkpoints, resume, TensorBoard, evaluation during training in
``evaluate.py``), the VecEnvs, and the export of a policy to a torch-free bundle
(``export.py``).

The path a step takes: SB3's learner -> ``VecNormalize(VecFrameStack(VecMonitor(workers)))``
-> the workers, which :func:`~fitpilot.agents.vecenv.make_workers` alone picks:

- ``subproc`` (default): one ``KerasTrainingEnv`` per process (forkserver), or in-process
  for one env;
- ``dummy``: all envs in the learner's process;
- ``batched`` (``batched_vecenv.py``): N copies of a task trained in one compiled call
  (``lanes``: N / lanes copies each of several tasks, one call per lane);
  with ``processes`` > 1 the copies are split into worker processes (``process_vecenv.py``);
- Ray (``backend: ray``, ``ray_vecenv.py`` and ``ray_actor.py``): one Ray actor per env.

May import: envs, controller, baselines and the ground modules; never experiments (which
never imports agents either). Torch and stable-baselines3 are imported inside functions,
after the process's threads are sized.
"""
