"""The reconstruction measures (fedattack/inversion/metrics.py): PSNR, SSIM, the assignment over
a batch, identification, the success rule that trivial images fail, intervals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedattack.data import load_dataset
from fedattack.inversion.metrics import (
    MAX_PSNR,
    assign,
    identified,
    label_hits,
    psnr_matrix,
    score_records,
    ssim,
    summarise,
    wilson,
)


@pytest.fixture(scope="module")
def mnist():
    """200 real MNIST records in [0, 1] and the data's mean image."""
    data = load_dataset("mnist")
    x = torch.from_numpy(data.x[:200]).float() / 255
    mean = torch.from_numpy(data.x.mean(0)).float() / 255
    return x, np.asarray(data.y[:200]), mean


def test_psnr_of_known_errors():
    a = torch.zeros(2, 1, 4, 4)
    b = torch.stack([torch.full((1, 4, 4), 0.1), torch.zeros(1, 4, 4)])
    psnr = psnr_matrix(a, b)
    assert psnr[0, 0] == pytest.approx(20.0, abs=1e-4)  # MSE 0.01
    assert psnr[0, 1] == MAX_PSNR  # identical: capped, not inf


def test_ssim_is_one_on_identical_images_and_low_on_noise(mnist):
    x, _, _ = mnist
    assert torch.allclose(ssim(x[:5], x[:5]), torch.ones(5))
    noise = torch.rand(x[:5].shape, generator=torch.Generator().manual_seed(0))
    assert (ssim(noise, x[:5]) < 0.1).all()
    assert (ssim(x[:5] * 0.9, x[:5]) > 0.9).all()


def test_assignment_recovers_a_shuffled_batch(mnist):
    x, _, _ = mnist
    order = np.array([3, 0, 4, 1, 2])
    rows, cols = assign(x[:5][order] + 0.05, x[:5])
    np.testing.assert_array_equal(rows, np.arange(5))
    np.testing.assert_array_equal(cols, order)


def test_identification_on_hand_made_candidates():
    candidates = torch.stack([torch.full((1, 2, 2), v) for v in (0.0, 0.5, 1.0)])
    reconstruction = torch.full((1, 1, 2, 2), 0.45)
    assert identified(reconstruction, np.array([1]), candidates).tolist() == [True]
    assert identified(reconstruction, np.array([0]), candidates).tolist() == [False]
    tie = torch.full((1, 1, 2, 2), 0.25)  # as near 0.0 as 0.5: not identified
    assert identified(tie, np.array([1]), candidates).tolist() == [False]


def scores_of(fake: torch.Tensor, mnist, batch: slice = slice(0, 4)):
    x, y, mean = mnist
    own = np.arange(batch.start, batch.stop)
    return score_records(fake, y[batch], x[batch], y[batch], x, own, mean)


def test_noise_blank_and_mean_images_fail_the_measure(mnist):
    x, _, mean = mnist
    shape = x[:4].shape
    trivial = {
        "noise": torch.rand(shape, generator=torch.Generator().manual_seed(1)),
        "black": torch.zeros(shape),
        "white": torch.ones(shape),
        "grey": torch.full(shape, 0.5),
        "mean image": mean.expand(shape).clone(),
        "own brightness": x[:4].mean(dim=(1, 2, 3), keepdim=True).expand(shape).clone(),
    }
    for name, fake in trivial.items():
        scores = scores_of(fake, mnist)
        assert not scores.success.any(), name


def test_near_copies_succeed_and_their_labels_count(mnist):
    x, y, _ = mnist
    noise = torch.rand(x[:4].shape, generator=torch.Generator().manual_seed(2))
    near = (x[:4] + 0.1 * (noise - 0.5)).clamp(0, 1)[[2, 0, 3, 1]]  # any order
    scores = scores_of(near, mnist)
    assert scores.success.all() and scores.identified.all()
    assert (scores.psnr > 25).all() and (scores.ssim > 0.5).all()
    assert scores.label_correct.sum() == 4


def test_labels_score_as_a_multiset():
    assert label_hits(np.array([1, 1, 2]), np.array([2, 1, 1])).sum() == 3
    assert label_hits(np.array([1, 1, 1]), np.array([2, 1, 1])).sum() == 2
    assert label_hits(np.array([0, 0, 0]), np.array([2, 1, 1])).sum() == 0


def test_wilson_interval():
    low, high = wilson(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson(5, 10)
    assert (low, high) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson(0, 0) is None


def test_summary_carries_an_interval_around_each_figure(mnist):
    x, _, _ = mnist
    noise = torch.rand(x[:4].shape, generator=torch.Generator().manual_seed(3))
    half = torch.cat([x[:2], noise[2:]])  # two recovered, two not
    summary = summarise(scores_of(half, mnist), seed=0)
    assert summary["n_records"] == 4 and summary["success_rate"] == 0.5
    for key in ("psnr", "ssim", "label_accuracy", "identification_rate", "success_rate"):
        low, high = summary[f"{key}_ci"]
        assert low <= summary[key] <= high
