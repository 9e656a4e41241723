"""Choose the rival rules' benchmark settings on the validation suite (never holdout or real).

    python -m fitpilot.experiments.tune_rules --out runs/tune-rules [--seeds 3] [--jobs 1]

Each candidate setting of GreedyLR and AdaLRS is a strategy of one benchmark of the
``validation`` suite (3 seeds; x0.1, x1 and x10 of the tuned rate; the grid of 7), run in
this process (the candidates are rows added to the strategy table here, which spawned
workers would not see); a killed run resumes. It prints each candidate's regret overall
and per starting factor. The strategy table's ``GREEDY_LR`` and ``ADALRS`` are the
candidates with the lowest overall regret; experiments/NOTES.md records the table.
"""

from __future__ import annotations

import argparse
from functools import partial
from typing import Any

from fitpilot.experiments.strategies import (
    STRATEGY_TABLE,
    RunContext,
    Strategy,
)

#: The candidates: GreedyLR's factor and patience (clamp fixed), AdaLRS's window and raise.
CANDIDATES: dict[str, list[dict[str, Any]]] = {
    "greedy_lr": [
        {"factor": factor, "patience": patience, "min_lr": 1e-5, "max_lr": 10.0}
        for factor in (0.5, 0.8)
        for patience in (0, 1, 2)
    ],
    "adalrs": [
        {"window": window, "raise_factor": raise_factor}
        for window in (3, 4)
        for raise_factor in (2.0, 3.0)
    ],
}


def build(rule: str, settings: dict[str, Any], context: RunContext) -> list[Any]:
    """The callbacks of one candidate: the rule with ``settings`` and best-weight restore."""
    if rule == "greedy_lr":
        from fitpilot.baselines.greedy_lr import GreedyLR

        return [GreedyLR(monitor="val_loss", restore_best_weights=True, **settings)]
    from fitpilot.baselines.adalrs import AdaLRS

    return [AdaLRS(monitor="val_loss", restore_best_weights=True, **settings)]


def candidate_name(rule: str, settings: dict[str, Any]) -> str:
    shown = {k: v for k, v in settings.items() if k not in ("min_lr", "max_lr")}
    return rule + "[" + ";".join(f"{k}={v:g}" for k, v in shown.items()) + "]"  # no commas


def register_candidates() -> list[str]:
    """Add every candidate to the strategy table (in this process); their names."""
    names = []
    for rule, options in CANDIDATES.items():
        for settings in options:
            name = candidate_name(rule, settings)
            STRATEGY_TABLE[name] = Strategy(name, f"{rule} with {settings}",
                                            partial(build, rule, settings),
                                            records_decisions=True)
            names.append(name)
    return names


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/tune-rules")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    names = register_candidates()
    from fitpilot.experiments.benchmark import plan_benchmark, run_benchmark
    from fitpilot.experiments.store import read_store
    from fitpilot.experiments.summary import summarize

    settings, config = plan_benchmark(suite="validation", strategies=",".join(names),
                                      seeds=args.seeds, resume=True, jobs=1)
    run_benchmark(settings, config, args.out, resume=True)
    runs = read_store(args.out).runs
    overall = summarize(runs, names, settings.oracle_grid)
    factors = {f: summarize(runs, names, settings.oracle_grid, keep=lambda c, f=f: c[1] == f)
               for f in settings.lr_factors}
    print("| candidate | regret | " + " | ".join(f"x{f:g}" for f in factors) + " | compute |")
    print("| --- | --- | " + " | ".join("---" for _ in factors) + " | --- |")
    for name in names:
        s = overall.per_strategy[name]
        per = [factors[f].per_strategy[name].regret for f in factors]
        print(f"| {name} | {s.regret.mean:.3f} | "
              + " | ".join(f"{r.mean:.3f}" if r else "n/a" for r in per)
              + f" | {s.compute.mean:.2f} |")


if __name__ == "__main__":
    main()
