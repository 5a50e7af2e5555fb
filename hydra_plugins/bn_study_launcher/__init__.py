"""Hydra launcher `packed`: a sweep's runs of one config (seeds, learning
rates) as one job that trains them as one model (packed_launcher.py).

Select it with `hydra/launcher=packed` (the study's primary config does).
Under any other launcher the sweepers pack (packed_launcher.py: PackingLauncher; the
grid sweeper, grid_sweeper.py, is `hydra/sweeper=basic`).
"""
