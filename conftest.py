"""Root pytest configuration: the notebooks run in FAST mode under pytest (nbval inherits this env)."""

import os

os.environ.setdefault("SEGLAB_FAST", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
