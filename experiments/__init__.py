"""The benchmark: what a careful user would do instead, against the learned controller.

The path data takes (docs/benchmark.md has the protocol):

plan (``benchmark.plan_benchmark``: ``Settings`` from the command's arguments; the
strategies are rows of ``strategies.py``) -> run (``runs.Runner`` trains one strategy on
one cell through a real ``model.fit``, in worker processes: ``worker.py``, or Ray:
``ray_execute.py``) -> store (``store.py``: one JSON line per run, appended as it finishes;
a killed benchmark resumes) -> summary (``summary.py``: regret, start spread, win rates,
compute, time to target, from the records alone) -> report (``report.py`` and
``plots.py``: ``report.md`` and PNGs).

Also: the tuned reference rate (``reference.py``), recipes over seeds (``recipe.py``),
measuring tuned rates of a suite (``tune_suite.py``) and choosing the rival rules'
settings (``tune_rules.py``), on the validation suite only.

May import: envs, controller, baselines and the ground modules; never agents.
"""
