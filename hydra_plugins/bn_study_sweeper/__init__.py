"""Hydra sweeper `bn_optuna`: hydra-optuna-sweeper, extended for the study with
per-cell studies, pruning, resume and a confirmation per study (docs/tuning.md;
its modules: docs/architecture.md)."""
