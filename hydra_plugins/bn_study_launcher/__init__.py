"""Hydra launcher `packed`: trains a sweep's seeds of one config as one model.

Select it with `hydra/launcher=packed` (the study's primary config does).
"""
