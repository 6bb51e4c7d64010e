"""Predict masks for image files: class-index palette PNGs at the input's full size, and optional overlays.

``python -m seglab predict CKPT INPUT... --out DIR`` calls ``predict_files``. Inputs are image files,
folders (their images, not recursive) and glob patterns (``"photos/**/*.jpg"``). Each prediction is
written as ``DIR/<stem>.png``: a palette PNG (mode "P") whose pixel values are the class indices and
whose palette holds the dataset's colours, the convention of PASCAL VOC's ``SegmentationClass``
masks, so any evaluator reads the indices and any viewer shows the colours. ``overlay=True`` also
writes ``DIR/<stem>_overlay.png`` (the colours blended over the photo).

Nothing is lost: every output path is planned and checked before the first image is read. Inputs
that share a stem (``a/x.png``, ``b/x.jpg``) get names from their folders (``DIR/a/x.png``,
``DIR/b/x.png``) and a note says so; an output that would replace an input file is refused; an
existing prediction is replaced only with ``overwrite=True``; each file is written atomically, never
through a symbolic link (``seglab.files``, the writer of every seglab command).

Inference: ``predict_image(model, image)`` -> ``(H, W) int64`` class indices at the image's full size
(``predict_batch`` for several). Images are normalised with the ImageNet statistics, shrunk so the
longer side is at most ``max_size``, padded bottom/right to a multiple of ``pad_multiple``, and the
logits are cropped and upsampled bilinearly to the full size before the argmax
(``seglab.inference.infer_logits``, which also runs the test-time augmentation, sliding-window and CRF
options of ``inference={...}``).

Modules: ``arrays`` (the model on in-memory images), ``plan`` (inputs and output names, checked),
``pictures`` (palette PNGs and overlays), ``run`` (``predict_files``: read, predict, write).
"""

from seglab.predict.arrays import predict_batch, predict_image
from seglab.predict.pictures import index_png, overlay_image
from seglab.predict.plan import IMAGE_SUFFIXES, PredictionPlan, collect_inputs, plan_outputs
from seglab.predict.run import predict_files

__all__ = [
    "IMAGE_SUFFIXES",
    "predict_image",
    "predict_batch",
    "collect_inputs",
    "plan_outputs",
    "index_png",
    "overlay_image",
    "predict_files",
    "PredictionPlan",
]
