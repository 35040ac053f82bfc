"""Whether a reconstruction recovered a record: PSNR, SSIM, identification and a success rule that
images made without the update cannot pass.

Images are compared in pixel space, [0, 1]. The attack returns n reconstructions for the n
records of the victim's round; each is paired with one true record by the assignment that
maximises the summed PSNR (`scipy.optimize.linear_sum_assignment`), so that a batch is scored
whatever order the attack returned it in. Per pair:

- `psnr`: ``10 log10(1 / MSE)`` (capped at MAX_PSNR for identical images);
- `ssim`: Wang et al. (2004) with an 11x11 Gaussian window of sigma 1.5 (smaller on smaller
  images), K1 = 0.01, K2 = 0.03, averaged over the valid window positions and the channels;
- `identified`: the reconstruction is strictly nearer (MSE) its own record than any other
  *candidate*: the other records of the victim's partition and `distractors` records of the
  dataset outside it (without them a victim with one record would be identified by definition);
- `success`: identified, and its PSNR beats every *trivial* image, made without the update: the
  data's mean image, a black and a white image, and a flat image at the record's own mean
  brightness (which needs the record: a stricter bar than any attacker could clear by guessing).
  Noise, a blank image and the mean image therefore fail (tested).

Labels are scored as a multiset (`label_correct`: as many records as the reconstructed labels
and the true labels have in common, class by class), independent of the images.

Each rate has a Wilson 95% interval over the reconstructed records, each mean a percentile
bootstrap 95% interval over the records (fedattack.metrics' random stream and intervals).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from scipy.stats import norm

from fedattack.metrics import BOOTSTRAP_RESAMPLES, CI_LEVEL, bootstrap_rng, percentile_interval

MAX_PSNR = 100.0
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


def psnr_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(m, n) PSNR in dB between the rows of `a` (m, ...) and `b` (n, ...), pixels in [0, 1]."""
    a, b = a.reshape(len(a), -1).double(), b.reshape(len(b), -1).double()
    mse = torch.cdist(a, b).pow(2) / a.shape[1]
    return (10 * torch.log10(1 / mse.clamp_min(10 ** (-MAX_PSNR / 10)))).float()


def _gaussian_window(size: int, sigma: float, channels: int) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-coords**2 / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(m,) SSIM of the paired images `a`, `b` (m, C, H, W), pixels in [0, 1]."""
    a, b = a.double(), b.double()
    channels, size = a.shape[1], min(SSIM_WINDOW, *a.shape[-2:])
    size -= 1 - size % 2  # an odd window
    w = _gaussian_window(size, SSIM_SIGMA, channels)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, w, groups=channels)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)
             / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)))
    return index.flatten(1).mean(1).float()


def assign(reconstructed: torch.Tensor, true: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(reconstruction index, true index) pairs maximising the summed PSNR."""
    rows, cols = linear_sum_assignment(psnr_matrix(reconstructed, true).numpy(), maximize=True)
    return rows, cols


def identified(reconstructed: torch.Tensor, own: np.ndarray,
               candidates: torch.Tensor) -> np.ndarray:
    """Whether each reconstruction is strictly nearer `candidates[own[i]]` than any other
    candidate (MSE, i.e. highest PSNR)."""
    psnr = psnr_matrix(reconstructed, candidates).numpy()
    rows = np.arange(len(own))
    mine = psnr[rows, own]
    psnr[rows, own] = -np.inf
    return mine > psnr.max(axis=1)


def trivial_images(true: torch.Tensor, mean_image: torch.Tensor) -> torch.Tensor:
    """(m, 4, C, H, W): for each true record, the images made without the update (see the
    module docstring)."""
    flat = true.mean(dim=(1, 2, 3), keepdim=True).expand_as(true)
    fixed = torch.stack([mean_image, torch.zeros_like(mean_image), torch.ones_like(mean_image)])
    return torch.cat([fixed.expand(len(true), *fixed.shape), flat[:, None]], dim=1)


def trivial_psnr(true: torch.Tensor, mean_image: torch.Tensor) -> np.ndarray:
    """(m,) the best PSNR any trivial image reaches on each true record."""
    images = trivial_images(true, mean_image)
    return np.array([psnr_matrix(images[i], true[i : i + 1]).max().item()
                     for i in range(len(true))])


def label_hits(predicted: np.ndarray, true: np.ndarray) -> np.ndarray:
    """0/1 per record: how many of the true labels the predicted multiset holds, as indicators
    (their sum is the multiset overlap)."""
    classes = int(max(predicted.max(initial=0), true.max(initial=0))) + 1
    overlap = np.minimum(np.bincount(predicted, minlength=classes),
                         np.bincount(true, minlength=classes)).sum()
    return (np.arange(len(true)) < overlap).astype(np.int64)


@dataclass
class RecordScores:
    """Per reconstructed record (in the order of the true records they were assigned to)."""

    true_index: np.ndarray  # position of the assigned true record in the round's batch
    psnr: np.ndarray
    ssim: np.ndarray
    identified: np.ndarray
    success: np.ndarray
    trivial_psnr: np.ndarray
    label_correct: np.ndarray

    @classmethod
    def concatenate(cls, scores: list[RecordScores]) -> RecordScores:
        return cls(*(np.concatenate([getattr(s, f) for s in scores])
                     for f in cls.__dataclass_fields__))


def score_records(reconstructed: torch.Tensor, labels: np.ndarray, true: torch.Tensor,
                  true_labels: np.ndarray, candidates: torch.Tensor, own: np.ndarray,
                  mean_image: torch.Tensor) -> RecordScores:
    """Score reconstructions (n, C, H, W in [0, 1]) against the round's n true records; `own[j]`
    is true record j's position among `candidates`. The scores follow the reconstructions'
    order."""
    if len(reconstructed) != len(true):
        raise ValueError(f"{len(reconstructed)} reconstructions of {len(true)} records")
    rows, cols = assign(reconstructed, true)  # rows: 0..n-1
    mine, theirs = reconstructed[rows], true[cols]
    psnr = psnr_matrix(mine, theirs).diagonal().numpy()
    trivial = trivial_psnr(theirs, mean_image)
    found = identified(mine, own[cols], candidates)
    return RecordScores(cols, psnr, ssim(mine, theirs).numpy(), found, found & (psnr > trivial),
                        trivial, label_hits(np.asarray(labels), np.asarray(true_labels)))


def wilson(successes: int, n: int, level: float = CI_LEVEL) -> tuple[float, float] | None:
    """Wilson score interval of a binomial proportion; None without trials."""
    if n == 0:
        return None
    z = norm.ppf(1 - (1 - level) / 2)
    p = successes / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def bootstrap_mean(values: np.ndarray, seed) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` over its records."""
    rng = bootstrap_rng(seed)
    draws = rng.integers(0, len(values), size=(BOOTSTRAP_RESAMPLES, len(values)))
    return percentile_interval(np.asarray(values, dtype=np.float64)[draws].mean(axis=1))


def summarise(scores: RecordScores, seed) -> dict:
    """Means and rates over the records, each with its 95% interval."""
    n = len(scores.psnr)
    out: dict = {"n_records": n}
    for key in ("psnr", "ssim"):
        values = getattr(scores, key)
        out[key] = float(values.mean())
        out[f"{key}_ci"] = list(bootstrap_mean(values, seed))
    for key, values in (("label_accuracy", scores.label_correct),
                        ("identification_rate", scores.identified),
                        ("success_rate", scores.success)):
        k = int(np.sum(values))
        out[key] = k / n
        out[f"{key}_ci"] = list(wilson(k, n))
    return out
