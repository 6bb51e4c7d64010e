"""seglab.viz.context: the geometry it draws against independent oracles (the exact receptive field of DeepLab
v2's ASPP-L, torch's AdaptiveAvgPool2d), and the figures' panels and errors."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from torch import nn

from seglab.models.deeplab_v1v2 import ASPPSum
from seglab.receptive_field import ReceptiveField
from seglab.viz.context import atrous_taps, pyramid_bins, show_aspp_taps, show_crf_iterations, show_pyramid_bins


@pytest.mark.parametrize("pixel", [(16, 16), (2, 3), (30, 0)])
def test_atrous_taps_are_the_exact_receptive_field_of_aspp_l(pixel):
    size, rates = 31, (2, 5, 9)
    rf = ReceptiveField(ASPPSum(4, 2, atrous_rates=rates).eval(), size, in_channels=4)
    read = {tuple(c) for c in torch.as_tensor(rf.support(pixel)).nonzero().tolist()}
    assert read == {t for r in rates for t in atrous_taps(pixel, r, size)}


@pytest.mark.parametrize("size,bins", [(65, 1), (65, 2), (65, 3), (65, 6), (10, 4), (7, 7)])
def test_pyramid_bins_are_adaptive_avg_pool_bins(size, bins):
    pool = nn.AdaptiveAvgPool2d((1, bins))
    for i, (start, end) in enumerate(pyramid_bins(size, bins)):
        x = torch.zeros(1, 1, 1, size)
        read = []
        for j in range(size):  # which inputs move output bin i: the oracle is torch's own pooling
            x.zero_()
            x[..., j] = 1.0
            if float(pool(x)[0, 0, 0, i]) > 0:
                read.append(j)
        assert read == list(range(start, end))


def test_figures():
    size = 25
    support = np.zeros((size, size), dtype=bool)
    for t in {t for r in (2, 4) for t in atrous_taps((12, 12), r, size)}:
        support[t] = True
    fig = show_aspp_taps(size, [(12, 12), (1, 1)], (2, 4), supports={(12, 12): support})
    assert len(fig.axes) == 2 and "= the cells it reads" in fig.axes[0].get_title()
    assert len(show_pyramid_bins(13, (1, 2, 3)).axes) == 3
    q = torch.softmax(torch.randn(4, 3, 8, 10), 1)  # 3 updates + the start
    image = np.zeros((8, 10, 3), dtype=np.uint8)
    fig = show_crf_iterations(image, q, ["a", "b", "c"], [(0, 0, 0), (255, 0, 0), (0, 255, 0)],
                              mask=np.zeros((8, 10), dtype=np.int64))
    titles = [ax.get_title() for ax in fig.axes]
    assert "ground truth" in titles and sum(t.startswith("after update") for t in titles) == 3
    wrong = int((q[0].argmax(0) != 0).sum())
    assert f"{wrong} pixels wrong" in titles[2]


def test_bad_arguments():
    with pytest.raises(ValueError, match="pixels is empty"):
        show_aspp_taps(9, [])
    with pytest.raises(ValueError, match="outside"):
        show_aspp_taps(9, [(9, 0)])
    with pytest.raises(ValueError, match="rate"):
        atrous_taps((0, 0), 0, 9)
    with pytest.raises(ValueError, match="bins"):
        pyramid_bins(5, 0)
    with pytest.raises(ValueError, match="marginals"):
        show_crf_iterations(np.zeros((4, 4, 3), np.uint8), np.zeros((3, 4, 4)), ["a"], [(0, 0, 0)])
    with pytest.raises(ValueError, match="image"):
        show_crf_iterations(np.zeros((4, 4, 3), np.uint8), np.zeros((1, 2, 5, 4)), ["a", "b"], [(0, 0, 0)] * 2)
