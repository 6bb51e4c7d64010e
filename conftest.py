"""Root pytest configuration: the notebooks run in FAST mode under pytest (nbval inherits this env)."""

import os
from pathlib import Path

os.environ.setdefault("SEGLAB_FAST", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

# A relative SEGLAB_DATA (e.g. ../shared/data) means relative to where pytest was started; notebooks
# run with notebooks/ as their working directory, so hand them the absolute path.
if os.environ.get("SEGLAB_DATA") and not Path(os.environ["SEGLAB_DATA"]).is_absolute():
    os.environ["SEGLAB_DATA"] = str(Path(os.environ["SEGLAB_DATA"]).resolve())
