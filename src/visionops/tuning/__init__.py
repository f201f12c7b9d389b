"""Hyperparameter search on Ray Tune.

    from visionops.tuning.space import create_search_space
    from visionops.tuning.sweep import SweepOptions, run_sweep

    result = run_sweep(SweepOptions(base=cfg, space=create_search_space("debug"), recipe="debug"))

Nothing is re-exported here: the CLI imports ``algorithms`` and ``presets`` to build its
parser, and must not pay for MLflow, torch and Ray on ``visionops --help``.
"""
