"""Class names and display colours of every seglab dataset, and mask <-> colour conversion.

A *palette* here is a tuple of K RGB triples, one per class index. Masks hold class indices
in ``[0, K)`` or 255 (= ignore); colours are only for display and for reading colour-coded
mask files.

- PASCAL VOC 2012 (Everingham et al. 2010): 21 classes, the devkit's bit-interleaved colormap
  (``voc_colormap``); index 255 maps to (224, 224, 192), the cream border of VOC masks.
- CamVid, 11-class SegNet version (Brostow et al. 2008; Badrinarayanan et al. 2017): the colours
  of SegNet's own scripts and SegNet's median-frequency class weights.
- ISBI 2012 EM (Arganda-Carreras et al. 2015): membrane / cell.
- Synthetic shapes: background / circle / square / triangle.
- ADE20K SceneParse150 (Zhou et al. 2017): 150 classes, with colours of seglab's own (see ``ADE20K_COLORS``).

Cityscapes' 19 classes and colours live with its label table in ``seglab.data.cityscapes``
(``CITYSCAPES_CLASSES``, ``CITYSCAPES_COLORS``, derived from ``CITYSCAPES_LABELS``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "IGNORE_COLOR",
    "VOC_CLASSES",
    "VOC_COLORS",
    "CAMVID_CLASSES",
    "CAMVID_COLORS",
    "CAMVID_CLASS_WEIGHTS",
    "ISBI_CLASSES",
    "ISBI_COLORS",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_COLORS",
    "ADE20K_CLASSES",
    "ADE20K_COLORS",
    "voc_colormap",
    "rgb_to_index",
]

#: Colour of ignored pixels (255) *in VOC's colour-coded mask files*, equal to ``voc_colormap()[255]``:
#: used to read such files (``rgb_to_index``). Pictures draw ignored pixels in ``seglab.viz.IGNORE_COLOR``
#: (magenta) instead, because this cream is hard to tell from CamVid's pole (192, 192, 128).
IGNORE_COLOR: tuple[int, int, int] = (224, 224, 192)


def voc_colormap(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colormap: ``(n, 3) uint8``, row i = RGB colour of class index i.

    Bit-interleaved construction of the VOC devkit (``VOClabelcolormap.m``): the index is read
    three bits at a time, lowest first; the three bits go to R, G and B, filling each channel from
    its most significant bit downwards, so that neighbouring indices get very different colours.
    Row 0 is black (background), row 255 is (224, 224, 192), the colour of the "void" border.
    ``voc_colormap().ravel().tolist()`` is the palette of VOC ``SegmentationClass`` PNGs
    (PIL ``Image.putpalette``).
    """
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for index in range(n):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):  # 8 rounds, 3 bits of the index per round
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        cmap[index] = (r, g, b)
    return cmap


VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
#: ``voc_colormap(21)`` written out.
VOC_COLORS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128), (0, 128, 128),
    (128, 128, 128), (64, 0, 0), (192, 0, 0), (64, 128, 0), (192, 128, 0), (64, 0, 128),
    (192, 0, 128), (64, 128, 128), (192, 128, 128), (0, 64, 0), (128, 64, 0), (0, 192, 0),
    (128, 192, 0), (0, 64, 128),
)  # fmt: skip

CAMVID_CLASSES: tuple[str, ...] = (
    "sky", "building", "pole", "road", "pavement", "tree", "signsymbol", "fence", "car",
    "pedestrian", "bicyclist",
)  # fmt: skip
CAMVID_COLORS: tuple[tuple[int, int, int], ...] = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)  # fmt: skip
#: SegNet's median-frequency balancing weights (Eigen & Fergus 2015) computed on the train split.
CAMVID_CLASS_WEIGHTS: tuple[float, ...] = (
    0.2595, 0.1826, 4.5640, 0.1417, 0.9051, 0.3826, 9.6446, 1.8418, 0.6823, 6.2478, 7.3614,
)  # fmt: skip

ISBI_CLASSES: tuple[str, ...] = ("membrane", "cell")
ISBI_COLORS: tuple[tuple[int, int, int], ...] = ((0, 0, 0), (255, 255, 255))

SYNTHETIC_CLASSES: tuple[str, ...] = ("background", "circle", "square", "triangle")
SYNTHETIC_COLORS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200),
)  # fmt: skip

#: ADE20K SceneParse150 (Zhou et al. 2017): the first name of each class of the benchmark's objectInfo150
#: list, in order (class k = annotation value k + 1).
ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher",
    "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip
#: seglab's own display colours for ADE20K (the benchmark's color150.mat palette is not reproduced): rows
#: 1, 2, ... of ``voc_colormap(512)``, skipping every colour closer than 180 RGB units to the magenta that
#: pictures draw ignored pixels in (``seglab.viz.IGNORE_COLOR``).
ADE20K_COLORS: tuple[tuple[int, int, int], ...] = (
    (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (0, 128, 128), (128, 128, 128), (64, 0, 0),
    (192, 0, 0), (64, 128, 0), (192, 128, 0), (64, 0, 128), (64, 128, 128), (192, 128, 128), (0, 64, 0),
    (128, 64, 0), (0, 192, 0), (128, 192, 0), (0, 64, 128), (128, 64, 128), (0, 192, 128), (128, 192, 128),
    (64, 64, 0), (192, 64, 0), (64, 192, 0), (192, 192, 0), (64, 64, 128), (64, 192, 128), (192, 192, 128),
    (0, 0, 64), (128, 0, 64), (0, 128, 64), (128, 128, 64), (0, 0, 192), (0, 128, 192), (128, 128, 192),
    (64, 0, 64), (192, 0, 64), (64, 128, 64), (192, 128, 64), (64, 0, 192), (64, 128, 192), (0, 64, 64),
    (128, 64, 64), (0, 192, 64), (128, 192, 64), (0, 64, 192), (0, 192, 192), (128, 192, 192), (64, 64, 64),
    (192, 64, 64), (64, 192, 64), (192, 192, 64), (64, 64, 192), (64, 192, 192), (192, 192, 192), (32, 0, 0),
    (160, 0, 0), (32, 128, 0), (160, 128, 0), (32, 0, 128), (32, 128, 128), (160, 128, 128), (96, 0, 0),
    (224, 0, 0), (96, 128, 0), (224, 128, 0), (96, 0, 128), (96, 128, 128), (224, 128, 128), (32, 64, 0),
    (160, 64, 0), (32, 192, 0), (160, 192, 0), (32, 64, 128), (32, 192, 128), (160, 192, 128), (96, 64, 0),
    (224, 64, 0), (96, 192, 0), (224, 192, 0), (96, 64, 128), (96, 192, 128), (224, 192, 128), (32, 0, 64),
    (160, 0, 64), (32, 128, 64), (160, 128, 64), (32, 0, 192), (32, 128, 192), (96, 0, 64), (224, 0, 64),
    (96, 128, 64), (224, 128, 64), (96, 128, 192), (32, 64, 64), (160, 64, 64), (32, 192, 64), (160, 192, 64),
    (32, 64, 192), (32, 192, 192), (160, 192, 192), (96, 64, 64), (224, 64, 64), (96, 192, 64), (224, 192, 64),
    (96, 64, 192), (96, 192, 192), (224, 192, 192), (0, 32, 0), (128, 32, 0), (0, 160, 0), (128, 160, 0),
    (0, 32, 128), (128, 32, 128), (0, 160, 128), (128, 160, 128), (64, 32, 0), (192, 32, 0), (64, 160, 0),
    (192, 160, 0), (64, 32, 128), (64, 160, 128), (192, 160, 128), (0, 96, 0), (128, 96, 0), (0, 224, 0),
    (128, 224, 0), (0, 96, 128), (128, 96, 128), (0, 224, 128), (128, 224, 128), (64, 96, 0), (192, 96, 0),
    (64, 224, 0), (192, 224, 0), (64, 96, 128), (64, 224, 128), (192, 224, 128), (0, 32, 64), (128, 32, 64),
    (0, 160, 64), (128, 160, 64), (0, 32, 192), (0, 160, 192), (128, 160, 192), (64, 32, 64), (192, 32, 64),
    (64, 160, 64), (192, 160, 64), (64, 32, 192),
)  # fmt: skip


def rgb_to_index(
    rgb: np.ndarray,
    colors: Sequence[Sequence[int]],
    *,
    ignore_color: Sequence[int] | None = IGNORE_COLOR,
    ignore_index: int = 255,
    source: str = "mask",
) -> np.ndarray:
    """Convert a colour-coded mask to class indices (the inverse of :func:`seglab.viz.colorize`).

    Args:
        rgb: ``(H, W, 3) uint8`` colour mask.
        colors: K RGB triples; pixels of colour ``colors[k]`` become k.
        ignore_color: pixels of this colour become ``ignore_index`` (None: no ignore colour).
        source: name used in error messages (usually the file path).

    Returns:
        ``(H, W) int64`` mask in ``[0, K)`` or ``ignore_index``.

    Raises:
        ValueError: naming ``source`` and the colours that match no class.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"{source}: a colour mask must be (H, W, 3) RGB, got shape {rgb.shape}")
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    out = np.full(code.shape, -1, dtype=np.int64)
    for index, color in enumerate(colors):
        r, g, b = (int(v) for v in color)
        out[code == ((r << 16) | (g << 8) | b)] = index
    if ignore_color is not None:
        r, g, b = (int(v) for v in ignore_color)
        out[code == ((r << 16) | (g << 8) | b)] = ignore_index
    unknown = out < 0
    if unknown.any():
        codes = np.unique(code[unknown])[:8]
        names = [((int(c) >> 16) & 255, (int(c) >> 8) & 255, int(c) & 255) for c in codes]
        raise ValueError(
            f"{source}: {int(unknown.sum())} pixels have colours that match no class, e.g. {names}. "
            f"Known colours: {[tuple(int(v) for v in c) for c in colors]} (+ ignore {ignore_color}). "
            "Fix: pass the palette used to draw these masks as colors=..., or save masks as class-index PNGs."
        )
    return out
