"""I-JEPA pretraining (``python -m training.pretrain``), data preparation (``python -m training.data``) and
frozen-feature evaluation (``python -m training.evaluate``).

Imports ``jepa``; nothing outside this package imports it (the service runs without it).
"""
