"""Hydra sweeper `bn_optuna`: hydra-optuna-sweeper, extended for the study.

`hydra/sweeper=optuna` (conf/hydra/sweeper/optuna.yaml) and `experiment=tune`
both run it. What it adds to the plugin (hydra_optuna_sweeper):

- per-cell studies: comma lists on the command line (`batch_size=8,64,512`)
  are the grid of scientific values, one Optuna study per cell, all in one
  storage; Optuna syntax (`lr=tag(log, interval(1e-3, 1.0))`) is the search
  space (`cells: false` gives the plugin's single study instead);
- pruning: each trial's job reports validation accuracy per epoch
  (pruning.trial_reporter, from study/runner.py) and stops when the study's
  pruner says so;
- trial state and metadata from each job's run record (`result.json`);
- resume: a rerun tops every study up to `n_trials`, failing the trials a
  dead sweep left RUNNING (same host: its process; any host: Optuna's heartbeat);
- confirmation: the best trial of each cell rerun with `confirm_seeds`,
  once per study however many sweeps share it.

The sweeper itself is in `_impl.py`, imported only when a sweep starts (Hydra
imports every plugin module at startup).
"""
