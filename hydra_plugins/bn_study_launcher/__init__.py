"""Hydra launcher `packed`: a sweep's runs of one config (seeds, learning
rates) as one job that trains them as one model (packed_launcher.py).

Select it with `hydra/launcher=packed` (the study's primary config does).
"""
