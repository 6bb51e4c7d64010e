"""Inference on whole images: one entry point, ``infer_logits``, used by ``evaluate``, ``predict`` and the notebooks.

Every step starts from ``images (N, 3, H, W) float32`` normalised with the ImageNet mean and std and ends
with ``(N, K, H, W) float32`` scores at the input's full size:

1. **Resize** (``max_size``): shrink (bilinear, antialiased) so the longer side is at most ``max_size``;
   pad bottom/right with 0 (the mean colour) to a multiple of ``pad_multiple``; crop the logits back and
   upsample them bilinearly to ``(H, W)``. With nothing else asked for this is :func:`forward_resized`,
   exactly (the full-size validation of ``fit``).
2. **Test-time augmentation** (``scales``, ``flip``): run the model on the image rescaled by each factor
   of ``scales`` (relative to the size of step 1, each in ``(0, 4]``) and, with ``flip``, on its mirror image
   too; each pass's logits are upsampled to ``(H, W)`` and turned into softmax probabilities, and the
   probabilities are averaged (Chen et al. 2017/2018, DeepLabV3 section 4.3 / DeepLabV3+ section 4.2:
   "multi-scale inputs (scales = {0.5, 0.75, 1.0, 1.25, 1.5, 1.75}) and left-right flipped inputs", averaging
   probabilities). The result is then ``log(mean probability)`` (log-probabilities: their argmax and softmax
   are those of the average, and they feed ``cross_entropy`` unchanged); probabilities below float32's
   smallest normal number are clamped to it so that no score is ``-inf``.
3. **Sliding windows** (``window``, ``stride``): for images larger than the model was trained on, the
   model sees ``window``-sized crops, ``stride`` px apart, the last one in each direction aligned to the
   image's edge; overlapping logits are blended with weights (``sliding_window_logits``); a progress bar
   shows when an image needs more than 64 windows.
4. **Dense CRF** (``crf=True``): the scores are refined by ``seglab.crf.dense_crf`` (Krähenbühl & Koltun
   2011, as in DeepLab v1/v2) with the RGB image, at full size or, with ``crf_max_size``, on a shrunk copy
   whose refined scores are upsampled bilinearly.

Nothing runs away: before the model runs, ``infer_logits`` counts the model-input pixels (at most
``max_pixels``, :data:`MAX_PIXELS`) and windows (at most ``max_windows``, :data:`MAX_WINDOWS`) one image
will cost over all passes, and the CRF's memory (``seglab.crf.memory``), and refuses with the numbers and the
flag that lowers them. The model is called in one place (``inputs.call_model``): it may return a tensor or
torchvision's ``{"out": ...}``; logits not at the input's size or with NaN/inf are refused.

Modules: ``options`` (``InferenceOptions``, ``parse_scales``), ``inputs`` (boundary checks, the model call),
``resize`` (``forward_resized``), ``windows`` (``sliding_window_logits``), ``pipeline`` (``infer_logits``).
Needs PyTorch and tqdm (``seglab.crf`` is imported only when ``crf=True``).
"""

from seglab.imaging import IMAGENET_MEAN, IMAGENET_STD
from seglab.inference.options import MAX_TTA_SCALE, InferenceOptions, parse_scales
from seglab.inference.pipeline import MAX_PIXELS, infer_logits
from seglab.inference.resize import forward_resized
from seglab.inference.windows import MAX_WINDOWS, sliding_window_logits

__all__ = ["InferenceOptions", "infer_logits", "sliding_window_logits", "forward_resized", "parse_scales",
           "MAX_TTA_SCALE", "MAX_PIXELS", "MAX_WINDOWS", "IMAGENET_MEAN", "IMAGENET_STD"]
