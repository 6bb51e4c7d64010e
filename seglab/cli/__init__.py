"""Command line: ``python -m seglab {train,evaluate,predict,check-data,download,export}``.

``train`` is a thin wrapper over :class:`seglab.engine.TrainConfig`: every field is a flag of the
same name (``batch_size`` → ``--batch-size``; booleans as ``--amp`` / ``--no-amp``), so the CLI and
the Python API never drift. With no flags it trains a small U-Net on the synthetic shapes on a CPU
in two to three minutes on a 2-core CPU.

Examples::

    python -m seglab train
    python -m seglab train --dataset camvid --data-root ../shared/data/camvid --max-size 240 --crop-size 160
    python -m seglab train --out runs/default --resume
    torchrun --nproc_per_node=4 -m seglab train --batch-size 4   # --batch-size is per process: global batch 16
    python -m seglab evaluate runs/default/best.pt
    python -m seglab evaluate --weights COCO_WITH_VOC_LABELS_V1 --model deeplabv3 --backbone resnet50 --dataset voc
    python -m seglab predict runs/default/best.pt photo1.jpg photo2.jpg --out predictions/
    python -m seglab predict runs/camvid/best.pt ../shared/data/camvid/val --out pred/ --overlay
    python -m seglab check-data --dataset folder --data-root mydata --classes background,road,car
    python -m seglab download voc --data-root data/
    python -m seglab export runs/default/best.pt --format onnx --out model.onnx --input-size 512 512

Every file that ``evaluate --json``, ``predict`` and ``export`` write goes through ``seglab.files``: an
existing file is replaced only with ``--overwrite``, a file the command reads (its checkpoint, its images)
never, a symbolic link never, and each write is atomic. Destinations and flag values are checked before
the model is loaded.

A failure prints one line ``error: ...`` saying what was wrong and how to fix it, and exits with 2
(argparse's errors too); ``--debug`` (or ``SEGLAB_DEBUG=1``) shows the full traceback instead.

Modules: ``parser`` (``build_parser``, the flag types and groups), ``options`` (flags -> ``TrainConfig``,
class names, ``InferenceOptions``), ``commands`` (one function per sub-command), ``errors`` (the one-line
message of any failure, out-of-memory hints), ``entry`` (``main``).
"""

from seglab.cli.entry import main
from seglab.cli.errors import error_message as _error_message  # noqa: F401 -- the name tests and older code use
from seglab.cli.options import config_from_args
from seglab.cli.parser import build_parser

__all__ = ["main", "build_parser", "config_from_args"]
