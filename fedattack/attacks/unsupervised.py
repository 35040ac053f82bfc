"""The unsupervised white-box attack of Nasr et al. (Sections II-D and IV-B).

The attacker has records from the target's data distribution but no membership labels. An
:class:`AttackNetwork` with a decoder is trained as an auto-encoder: the encoder squeezes each
record's features into one scalar (the membership embedding) and the decoder reconstructs from it
five summaries that are strong membership signals: the loss, whether the prediction is correct, the
confidence on the true label, the prediction entropy and the gradient norm. The target records are
then embedded, split into two clusters by spectral clustering, and the cluster with the smaller
mean gradient norm is called the members (members' gradients are pushed towards zero by training).

Summaries are per-record arrays, each (N,) or (N, T) over the T observed snapshots; an (N, T)
summary is reduced to its mean over the snapshots, both as a reconstruction target (the encoder sees
all T snapshots) and for the gradient norm that names the member cluster.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from fedattack.attack_registry import AttackOutcome, register

# torch, scikit-learn and the attack network are imported where used (see whitebox.py).
from .whitebox import ADAM_EPS, FeatureSource, network_outputs, seeded, to_device

if TYPE_CHECKING:
    import torch

TARGETS = ("loss", "correct", "confidence", "entropy", "grad_norm")
GRAD_NORM = "grad_norm"
CLUSTER_SAMPLE = 5000
"""Default cap on the records given to spectral clustering (its affinity graph and eigenproblem
grow with N); the others join the cluster with the nearer mean embedding."""
NEIGHBOURS = 10
"""Fewest neighbours per record in the clustering graph; it links each record to a tenth of the
records clustered when that is more (see :func:`cluster_members`)."""
NEIGHBOUR_SHARE = 0.1


def summary_column(summaries: dict[str, np.ndarray], key: str, n: int) -> np.ndarray:
    """(n,) summary ``key``: as given if (n,), the mean over the snapshots if (n, T)."""
    if key not in summaries:
        raise KeyError(f"the summaries have no {key!r} (they have {sorted(summaries)})")
    values = np.asarray(summaries[key], dtype=np.float64)
    if values.ndim not in (1, 2) or len(values) != n:
        raise ValueError(f"summary {key!r} must be ({n},) or ({n}, T), got shape {values.shape}")
    return values.mean(axis=1) if values.ndim == 2 else values


def cluster_members(
    embeddings: np.ndarray, grad_norm: np.ndarray, seed: int = 0, sample: int = CLUSTER_SAMPLE
) -> np.ndarray:
    """0/1 per record: two spectral clusters of the 1-d embeddings, 1 for the smaller-norm one.

    Spectral clustering runs on a k-nearest-neighbour graph (scale-free, and an outlier stays
    connected to its neighbours) over at most ``sample`` records drawn with ``seed``; the rest are
    assigned to the cluster with the nearer mean embedding. If the clustering finds one cluster
    only, every record is in it and so called a member.

    Each record is linked to a tenth of the records (at least :data:`NEIGHBOURS`). With
    scikit-learn's 10 neighbours the graph of a 1-d embedding is a thin chain: a small run of
    outlying records forms its own component, and the cut isolates it. On the Table VII runs
    (1,000 targets, AUC of the embedding 0.77 and 0.85) 10 neighbours called 11% and 1% of the
    targets members, for an accuracy of 0.55 and 0.51; a tenth of the records gave balanced
    clusters and 0.69 and 0.76.
    """
    n = len(embeddings)
    if n < 3:
        raise ValueError(f"clustering needs at least 3 records, got {n}")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, sample, replace=False)) if n > sample else np.arange(n)
    from sklearn.cluster import SpectralClustering

    clustering = SpectralClustering(
        n_clusters=2,
        affinity="nearest_neighbors",
        n_neighbors=min(max(NEIGHBOURS, round(NEIGHBOUR_SHARE * len(rows))), len(rows) - 1),
        random_state=seed,
    )
    with warnings.catch_warnings():
        # Two well-separated clusters make a disconnected graph: the easy case, not a problem.
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        sample_labels = clustering.fit_predict(embeddings[rows, None])
    if len(np.unique(sample_labels)) < 2:
        return np.ones(n, dtype=np.int64)
    means = np.array([embeddings[rows][sample_labels == k].mean() for k in (0, 1)])
    clusters = np.abs(embeddings[:, None] - means[None, :]).argmin(axis=1)
    clusters[rows] = sample_labels
    member_cluster = np.argmin([grad_norm[clusters == k].mean() for k in (0, 1)])
    return (clusters == member_cluster).astype(np.int64)


class UnsupervisedAttack:
    """Encoder-decoder attack trained without membership labels, then spectral clustering.

    After :meth:`fit`: ``network_``, ``history_`` (one dict per epoch: ``epoch``, ``train_loss``,
    the mean squared reconstruction error of the standardised targets), ``target_mean_`` and
    ``target_std_`` (the standardisation of the :data:`TARGETS`, in that order).
    ``cluster_sample`` caps the records clustered (see :func:`cluster_members`).
    """

    def __init__(
        self,
        epochs: int = 100,
        lr: float = 1e-4,
        batch_size: int = 64,
        kernels: int = 1000,
        cluster_sample: int = CLUSTER_SAMPLE,
        device: str | torch.device = "cpu",
        seed: int = 0,
        on_epoch: Callable[[dict], None] | None = None,
    ):
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.kernels = kernels
        self.cluster_sample = cluster_sample
        self.device = device
        self.seed = seed
        self.on_epoch = on_epoch

    def fit(self, source: FeatureSource, summaries: dict[str, np.ndarray]) -> UnsupervisedAttack:
        import torch

        from .network import AttackNetwork

        n = len(source)
        targets = np.stack([summary_column(summaries, key, n) for key in TARGETS], axis=1)
        self.target_mean_ = targets.mean(axis=0)
        std = targets.std(axis=0)
        self.target_std_ = np.where(std > 0, std, 1.0)
        targets = torch.as_tensor((targets - self.target_mean_) / self.target_std_).float()
        rng = np.random.default_rng(self.seed)

        with seeded(self.seed, self.device):
            self.network_ = AttackNetwork(
                source.shapes(), kernels=self.kernels, decoder_outputs=len(TARGETS), init="paper"
            ).to(self.device)
            optimizer = torch.optim.Adam(self.network_.parameters(), lr=self.lr, eps=ADAM_EPS)
            self.history_: list[dict] = []
            for epoch in range(1, self.epochs + 1):
                loss = self._train_epoch(optimizer, source, targets, rng)
                record = {"epoch": epoch, "train_loss": loss}
                self.history_.append(record)
                if self.on_epoch is not None:
                    self.on_epoch(record)
        self.network_.eval()
        return self

    def _train_epoch(self, optimizer, source: FeatureSource, targets, rng) -> float:
        from torch import nn

        self.network_.train()
        order = rng.permutation(len(source))
        losses = []
        for start in range(0, len(order), self.batch_size):
            rows = np.sort(order[start : start + self.batch_size])
            reconstruction = self.network_.decode(to_device(source.take(rows), self.device))
            loss = nn.functional.mse_loss(reconstruction, targets[rows].to(reconstruction.device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return float(np.mean(losses))

    def embed(self, source: FeatureSource) -> np.ndarray:
        """The scalar membership embedding of each record, in source order."""
        self.network_.eval()
        return network_outputs(
            self.network_.embed, source, batch_size=self.batch_size, device=self.device
        )

    def _embed_and_cluster(self, source, summaries) -> tuple[np.ndarray, np.ndarray]:
        embeddings = self.embed(source)
        grad_norm = summary_column(summaries, GRAD_NORM, len(source))
        return embeddings, cluster_members(embeddings, grad_norm, self.seed, self.cluster_sample)

    def predict(self, source: FeatureSource, summaries: dict[str, np.ndarray]) -> np.ndarray:
        """0/1 per record: 1 for the cluster with the smaller mean gradient norm.

        Only ``summaries["grad_norm"]`` is read, to name the member cluster.
        """
        return self._embed_and_cluster(source, summaries)[1]

    def predict_proba(self, source: FeatureSource, summaries: dict[str, np.ndarray]) -> np.ndarray:
        """A membership score per record for ROC and AUC (not a probability).

        The embedding, its sign chosen so that the member cluster of :meth:`predict` has the
        higher mean score.
        """
        embeddings, labels = self._embed_and_cluster(source, summaries)
        if labels.min() == labels.max():
            return embeddings
        members_higher = embeddings[labels == 1].mean() >= embeddings[labels == 0].mean()
        return embeddings if members_higher else -embeddings


# --- registered attack ----------------------------------------------------------------------------


@register("unsupervised", knowledge="unsupervised", reads_features=True,
          description="Nasr et al.: an encoder-decoder on the targets' features, spectral "
          "clustering of the embeddings, no membership knowledge")
def run_unsupervised(ctx) -> AttackOutcome:
    # The paper's encoder (N(0, 0.01), unstandardised inputs) reads probabilities in [0, 1].
    spec = replace(ctx.spec, output_scale="probability")
    c, ex = ctx.cfg, ctx.extractor(spec)
    targets = ctx.features("unsupervised-targets", spec, ctx.knowledge.targets)
    summaries = ex.scalar_summaries(ctx.dataset, ctx.knowledge.targets)
    attack = UnsupervisedAttack(epochs=c.epochs, lr=c.lr, batch_size=c.batch_size,
                                kernels=c.kernels, device=ctx.device, seed=ctx.seed)
    attack.fit(targets, summaries)
    return AttackOutcome("unsupervised", ctx.describe(spec),
                         attack.predict_proba(targets, summaries),
                         predictions=attack.predict(targets, summaries),
                         extra={"embedding": attack.embed(targets)})
