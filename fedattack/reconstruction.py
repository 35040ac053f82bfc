"""Measures of the GAN attack, computed offline from what the attacker recorded.

The attacker's view (`local-<attacker>`, kind ``generated``) holds, for every attacked round, the
samples its generator made from one fixed latent batch. Each round is measured by
:class:`GanMeasure`, whose verdict noise cannot fool:

- an *independent classifier* (the experiment's architecture, trained on held-out real records
  that the federation never trained on) with one output more than the dataset has classes: a
  "none of these" class, trained on uniform noise, checkerboards, blank images, heavily blurred
  real images and the samples of untrained generators (:func:`none_images`); with
  ``gan.classifier: eigenfaces``, PCA of the held-out photographs and a softmax
  (:class:`Eigenfaces`), which learns from a few photographs per subject. Measured: the share
  of generated samples it assigns to the victim's class (`victim_share`), to "none"
  (`none_share`), and its mean probability for the victim's class;
- a *kernel distance* in that classifier's feature space (the input of its last linear layer):
  the unbiased squared MMD with KID's cubic polynomial kernel between the generated samples and
  the victim's own training records of the class (`kernel_distance`), and the same, relative to
  the nearest other class: ``relative_distance = sqrt(MMD^2(generated, victim) /
  min_c MMD^2(real class c, victim))`` (negative where the unbiased MMD^2 is), so 0 is where
  real unseen samples of the victim's class lie and 1 is the nearest other class. A kernel
  distance, not a Frechet one: the victim's class has a handful of records on the faces (and
  32-64 generated samples), far fewer than the 200 feature dimensions a Frechet covariance
  needs;
- the success rule: a round *succeeds* when at least half of its samples are assigned to the
  victim's class (``victim_share >= 0.5``) and ``relative_distance <= 0.5``. The rule is checked
  on held-out real records of the victim's class too (`victim_share_real`,
  `relative_distance_real`; topped up to MIN_CHECK records from outside every split, see
  :func:`check_records`): where they fail it, the measure cannot resolve success on this
  data and `success` is null;
- *nearest-neighbour distances* (root mean squared pixel difference, pixels in [0, 1]) from each
  generated sample to the victim's own training records of the class and to as many held-out
  records of the class: a generator that copies the victim's records is closer to the former,
  one that produces the class in general is as close to both. For scale, the same distance
  from each held-out record of the class to the victim's records (`nn_distance_real`).

Only this evaluation reads the ground truth (which records the victims trained on).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fedattack import reporting
from fedattack.config import Experiment
from fedattack.data import Dataset
from fedattack.experiment import RUN_FILE, SNAPSHOT_DIR, experiment_dataset, experiment_splits
from fedattack.gan import WithGenerated, build_generator, generate
from fedattack.io import read_json, write_json
from fedattack.models import build_target
from fedattack.snapshots import GENERATED_KIND, SnapshotStore, local_view
from fedattack.training import evaluate, resolve_device, train_model

CLASSIFIER_TRAIN_SHARE = 0.8  # of the held-out records; the rest measures its accuracy
GRID_SAMPLES = 32  # generated (and real) samples shown per round
ROUNDS_FILE = "gan/rounds.json"
SUCCESS_SHARE = 0.5  # a success needs at least this victim share ...
SUCCESS_DISTANCE = 0.5  # ... and at most this relative kernel distance
NONE_KINDS = ("uniform noise", "checkerboard", "blank", "blurred", "untrained generator")
NONE_GENERATORS = 4  # untrained generators whose samples train the "none" class
MAX_REFERENCE = 500  # records per class in the kernel distances
EIGENFACES_COMPONENTS = 60  # principal axes of the eigenfaces classifier
EIGENFACES_POOL = 4  # it sees images average-pooled by this factor
EIGENFACES_WEIGHT_DECAY = 1e-3  # L2 penalty of its softmax layer
EIGENFACES_STEPS = 500  # L-BFGS iterations of its softmax layer
EIGENFACES_ZOOMS = (0.9, 1.1)  # its training photographs are also seen zoomed by these ...
EIGENFACES_SHIFT = 4  # ... and shifted by this many pixels up, down, left and right, and mirrored
MIN_CHECK = 8  # fewer held-out victim records: the check is topped up outside every split
SUCCESS_RULE = (f"victim_share >= {SUCCESS_SHARE} and relative_distance <= {SUCCESS_DISTANCE}"
                " (null where held-out real victim records fail the same rule)")

GAN_COLUMNS = (
    ("experiment", "experiment", "{}"),
    ("attack", "attack", "{}"),
    ("round", "round", "{}"),
    ("victim_share_first", "victim share (first)", "{:.3f}"),
    ("victim_share", "victim share", "{:.3f}"),
    ("none_share", "none share", "{:.3f}"),
    ("relative_distance_first", "rel. dist. (first)", "{:.2f}"),
    ("relative_distance", "rel. dist.", "{:.2f}"),
    ("relative_distance_real", "rel. dist. real", "{:.2f}"),
    ("success", "success", "{}"),
    ("first_success_round", "first success", "{}"),
    ("nn_distance_train", "NN dist. train", "{:.3f}"),
    ("nn_distance_real", "NN dist. real", "{:.3f}"),
    ("classifier_accuracy", "classifier acc", "{:.3f}"),
    ("target_test_accuracy", "model test acc", "{:.3f}"),
    ("epsilon", "epsilon", "{:.2f}"),
)


class ReferenceSets:
    """The real records a round is compared with, as flat [0, 1] pixel rows."""

    def __init__(self, exp: Experiment, dataset: Dataset) -> None:
        splits = experiment_splits(exp, dataset)
        victim = exp.gan.victim_class
        owners = [p for i, p in enumerate(splits.partitions) if i != exp.gan.attacker]
        trained = np.concatenate(owners)
        trained = trained[dataset.y[trained] == victim]
        held_out = splits.nonmembers[dataset.y[splits.nonmembers] == victim]
        if len(trained) == 0 or len(held_out) == 0:
            raise ValueError(f"gan: class {victim} has {len(trained)} training records of the "
                             f"other participants and {len(held_out)} held-out records; both "
                             "are needed to measure the attack")
        size = min(len(trained), len(held_out))  # equal sizes: distances are comparable
        rng = np.random.default_rng(exp.seed)
        self.trained_idx = np.sort(rng.choice(trained, size, replace=False))
        self.trained = pixels(dataset.x[self.trained_idx])
        self.held_out = pixels(dataset.x[np.sort(rng.choice(held_out, size, replace=False))])


def pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 images as float rows in [0, 1]."""
    return torch.from_numpy(images.reshape(len(images), -1)).float() / 255


def to_pixels(samples: torch.Tensor, dataset: Dataset) -> torch.Tensor:
    """Normalised model inputs back to [0, 1] pixel rows (the inverse of Dataset.batch)."""
    mean = torch.tensor(dataset.mean).view(1, -1, 1, 1)
    std = torch.tensor(dataset.std).view(1, -1, 1, 1)
    return (samples * std + mean).clamp(0, 1).reshape(len(samples), -1)


def nearest_distance(samples: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """For each sample row, the RMS difference to its nearest reference row."""
    return torch.cdist(samples, reference).min(dim=1).values / samples.shape[1] ** 0.5


def normalise(pixel_images: torch.Tensor, dataset: Dataset) -> torch.Tensor:
    """[0, 1] images (N, C, H, W) as model inputs (as Dataset.batch normalises)."""
    mean = torch.tensor(dataset.mean).view(1, -1, 1, 1)
    std = torch.tensor(dataset.std).view(1, -1, 1, 1)
    return (pixel_images - mean) / std


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) images, edges replicated."""
    radius = max(1, int(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    out = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def checkerboards(n: int, shape: tuple[int, int, int], rng: np.random.Generator) -> torch.Tensor:
    """Checkerboards of random period (1-4 pixels), phase and two random grey levels."""
    c, h, w = shape
    out = torch.empty(n, c, h, w)
    for i in range(n):
        period = int(rng.integers(1, 5))
        dy, dx = rng.integers(0, 2 * period, size=2)
        ys = (np.arange(h)[:, None] + dy) // period
        xs = (np.arange(w)[None, :] + dx) // period
        cells = torch.from_numpy(((ys + xs) % 2).astype(np.float32))
        low, high = sorted(rng.random(2))
        out[i] = (low + (high - low) * cells).expand(c, h, w)
    return out


def none_images(exp: Experiment, dataset: Dataset, real_idx: np.ndarray, n: int,
                seed: int) -> torch.Tensor:
    """`n` model inputs of the "none of these" class, in equal parts of each of NONE_KINDS:
    uniform noise, checkerboards, blank images (greys from black to white), real records (of
    `real_idx`) blurred beyond recognition (sigma of 1/8 to 1/4 of the image side), and samples of
    NONE_GENERATORS untrained generators (seeds other than the attacker's)."""
    rng = np.random.default_rng(seed)
    shape = tuple(dataset.input_shape)
    per_kind = -(-n // len(NONE_KINDS))
    noise = torch.from_numpy(rng.random((per_kind, *shape), dtype=np.float32))
    blank = torch.from_numpy(rng.permutation(np.linspace(0, 1, per_kind, dtype=np.float32))
                             ).view(-1, 1, 1, 1)
    side = min(shape[1:])
    chosen = rng.choice(real_idx, per_kind, replace=len(real_idx) < per_kind)
    real = torch.from_numpy(dataset.x[chosen]).float() / 255
    blurred = torch.cat([gaussian_blur(real[i:i + 1], float(s)) for i, s in
                         enumerate(rng.uniform(side / 8, side / 4, per_kind))])
    pixel_kinds = [noise, checkerboards(per_kind, shape, rng), blank.expand(-1, *shape), blurred]
    inputs = [normalise(k, dataset) for k in pixel_kinds]
    gen_rng = torch.Generator().manual_seed(seed)
    counts = np.diff(np.linspace(0, per_kind, NONE_GENERATORS + 1).astype(int))
    for g, count in enumerate(counts):
        generator = build_generator(exp.gan, dataset, seed=exp.seed + 7919 * (g + 1))
        inputs.append(generate(generator, generator.noise(int(count), gen_rng)))
    return torch.cat(inputs)[torch.from_numpy(rng.permutation(len(NONE_KINDS) * per_kind)[:n])]


def penultimate(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of the model's last linear layer (its feature space), in float64."""
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    seen = []
    handle = last.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return seen[0].flatten(1).double()


def polynomial_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """KID's kernel (a.b / d + 1)^3."""
    return (a @ b.T / a.shape[1] + 1) ** 3


def mmd2(a: torch.Tensor, b: torch.Tensor) -> float:
    """Unbiased squared maximum mean discrepancy between feature rows a and b (>= 2 rows each);
    its expectation is 0 when both come from one distribution, so it may be slightly negative."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"a kernel distance needs 2 samples a side, got {len(a)} and {len(b)}")
    kaa, kbb, kab = polynomial_kernel(a, a), polynomial_kernel(b, b), polynomial_kernel(a, b)
    m, n = len(a), len(b)
    within_a = (kaa.sum() - kaa.diagonal().sum()) / (m * (m - 1))
    within_b = (kbb.sum() - kbb.diagonal().sum()) / (n * (n - 1))
    return float(within_a + within_b - 2 * kab.mean())


class GanMeasure:
    """The verdict on a batch of generated samples: classifier shares, relative kernel distance,
    success. Built from a trained (num_classes + 1)-way classifier, model inputs of the victim's
    class that it never saw (`reference`, the attack's target), held-out ones (`held_out`, the
    rule's check) and, for every other class, unseen real records (`others`)."""

    def __init__(self, classifier: torch.nn.Module, victim_class: int, num_classes: int,
                 reference: torch.Tensor, held_out: torch.Tensor,
                 others: dict[int, torch.Tensor], accuracy: float) -> None:
        self.classifier = classifier.eval()
        self.victim_class, self.none_class = victim_class, num_classes
        self.accuracy = accuracy
        self.reference = penultimate(self.classifier, reference)
        distances = {c: mmd2(penultimate(self.classifier, x), self.reference)
                     for c, x in others.items() if len(x) >= 2}
        if not distances:
            raise ValueError("gan: no other class has 2 unseen records to scale the distance")
        self.nearest_class = min(distances, key=distances.get)
        self.nearest_distance = distances[self.nearest_class]
        self.check_size = len(held_out)
        self.real = self.score(held_out, check=False) if len(held_out) >= 2 else None
        self.resolved = self.real is not None and self.real["success"]

    @torch.no_grad()
    def score(self, samples: torch.Tensor, check: bool = True) -> dict:
        """The measures of samples (model inputs); `success` is null where the measure does not
        resolve it (held-out real victim records fail the rule)."""
        probs = torch.softmax(self.classifier(samples), dim=1)
        assigned = probs.argmax(1)
        distance = mmd2(penultimate(self.classifier, samples), self.reference)
        relative = float(np.sign(distance)) * (abs(distance) / self.nearest_distance) ** 0.5
        share = (assigned == self.victim_class).float().mean().item()
        success = share >= SUCCESS_SHARE and relative <= SUCCESS_DISTANCE
        return {
            "victim_share": share,
            "none_share": (assigned == self.none_class).float().mean().item(),
            "victim_confidence": probs[:, self.victim_class].mean().item(),
            "kernel_distance": distance,
            "relative_distance": relative,
            "success": (success if self.resolved else None) if check else success,
        }

    def anchors(self) -> dict:
        """What the scale and the check of the measure are."""
        real = self.real or {}
        return {"classifier_accuracy": self.accuracy,
                "nearest_class": self.nearest_class,
                "kernel_distance_nearest_class": self.nearest_distance,
                "check_records": self.check_size,
                "victim_share_real": real.get("victim_share"),
                "relative_distance_real": real.get("relative_distance"),
                "measure_resolved": self.resolved,
                "success_rule": SUCCESS_RULE}


def classifier_split(exp: Experiment, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The held-out records the classifier trains on, and the rest (its accuracy, the rule's
    check). Stratified by class, so that a class of few held-out records (a face) is in both;
    the victim's class keeps at least 2 records out of training when it has 4."""
    held_out = experiment_splits(exp, dataset).nonmembers
    rng = np.random.default_rng(exp.seed)
    train, rest = [], []
    for c in np.unique(dataset.y[held_out]):
        idx = rng.permutation(held_out[dataset.y[held_out] == c])
        out = int(round(len(idx) * (1 - CLASSIFIER_TRAIN_SHARE)))
        out = max(out, 2 if c == exp.gan.victim_class and len(idx) >= 4 else 1 if len(idx) > 1
                  else 0)
        train.append(idx[out:])
        rest.append(idx[:out])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(rest))


class Eigenfaces(torch.nn.Module):
    """Eigenfaces (Turk and Pentland, 1991) with a softmax. An input, average-pooled by `pool`
    and flattened, minus the training faces' mean, is projected on their `components` leading
    principal axes, each coefficient divided by the axis's standard deviation (whitened); two
    more features, each over its mean on the training faces, tell noise from faces: the distance
    from that face space (the RMS of what the axes leave unexplained) and the RMS of the detail
    the pooling removes. One linear layer over those components + 2 features gives the outputs;
    its input is the classifier's feature space (:func:`penultimate`). Fitted in closed form
    (:meth:`fit_space`), then the linear layer (:meth:`fit_head`): it learns from a few
    photographs per class where a CNN trained from scratch does not."""

    def __init__(self, input_shape: tuple[int, int, int], components: int, outputs: int,
                 pool: int = EIGENFACES_POOL) -> None:
        super().__init__()
        c, h, w = input_shape
        self.pool = pool
        dim = c * (h // pool) * (w // pool)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("axes", torch.zeros(components, dim))
        self.register_buffer("scale", torch.ones(components))
        self.register_buffer("distance_scale", torch.ones(2))
        self.head = torch.nn.Linear(components + 2, outputs)

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        return (F.avg_pool2d(x, self.pool) if self.pool > 1 else x).flatten(1)

    @torch.no_grad()
    def fit_space(self, faces: torch.Tensor) -> Eigenfaces:
        """The mean, principal axes and scales of `faces` (model inputs, more than
        `components`)."""
        rows = self.rows(faces).double()
        mean = rows.mean(0)
        _, singular, vt = torch.linalg.svd(rows - mean, full_matrices=False)
        k = self.axes.shape[0]
        if len(rows) <= k:
            raise ValueError(f"eigenfaces: {len(rows)} training images for {k} components")
        self.mean.copy_(mean.float())
        self.axes.copy_(vt[:k].float())
        self.scale.copy_((singular[:k] / (len(rows) - 1) ** 0.5).float())
        self.distance_scale.fill_(1.0)
        self.distance_scale.copy_(self.features(faces)[:, -2:].mean(0).clamp_min(1e-8))
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        centred = self.rows(x) - self.mean
        coefficients = centred @ self.axes.T
        residual = centred - coefficients @ self.axes
        detail = torch.zeros_like(x)  # nothing pooled away
        if self.pool > 1:
            pooled = F.avg_pool2d(x, self.pool)
            detail = x[..., :pooled.shape[-2] * self.pool, :pooled.shape[-1] * self.pool] \
                - pooled.repeat_interleave(self.pool, -2).repeat_interleave(self.pool, -1)
        distances = torch.stack([residual.pow(2).mean(1).sqrt(),
                                 detail.flatten(1).pow(2).mean(1).sqrt()], dim=1)
        return torch.cat([coefficients / self.scale, distances / self.distance_scale], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def fit_head(self, x: torch.Tensor, y: torch.Tensor,
                 weight_decay: float = EIGENFACES_WEIGHT_DECAY,
                 steps: int = EIGENFACES_STEPS) -> Eigenfaces:
        """Multinomial logistic regression of y on the features of x (full batch, L-BFGS, L2
        penalty on the weights), every class weighted equally."""
        with torch.no_grad():
            features = self.features(x)
        counts = torch.bincount(y, minlength=self.head.out_features).float()
        present = counts > 0
        weights = torch.where(present, len(y) / (counts.clamp_min(1) * present.sum()), 0.0)
        optimizer = torch.optim.LBFGS(self.head.parameters(), max_iter=steps,
                                      line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = F.cross_entropy(self.head(features), y, weight=weights) \
                + weight_decay * self.head.weight.pow(2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        return self


def face_views(x: torch.Tensor) -> torch.Tensor:
    """Images (N, C, H, W) and their variants, N at a time: mirrored, then each of the two
    zoomed by EIGENFACES_ZOOMS about the centre (edges replicated) and shifted EIGENFACES_SHIFT
    pixels up, down, left and right (wrapping round). Eigenfaces learn pose and framing from
    these where a subject has a few photographs."""
    h, w = x.shape[-2:]
    base = [x, x.flip(-1)]
    views = list(base)
    for zoom in EIGENFACES_ZOOMS:
        for v in base:
            big = F.interpolate(v, scale_factor=zoom, mode="bilinear", align_corners=False)
            dh, dw = big.shape[-2] - h, big.shape[-1] - w
            if zoom >= 1:
                views.append(big[..., dh // 2:dh // 2 + h, dw // 2:dw // 2 + w])
            else:
                views.append(F.pad(big, (-dw // 2, -dw - (-dw // 2), -dh // 2, -dh - (-dh // 2)),
                                   mode="replicate"))
    s = EIGENFACES_SHIFT
    for shift in ((s, 0), (-s, 0), (0, s), (0, -s)):
        views.extend(torch.roll(v, shift, dims=(-2, -1)) for v in base)
    return torch.cat(views)


def train_classifier(exp: Experiment, dataset: Dataset, train_idx: np.ndarray,
                     nones: torch.Tensor, device: torch.device) -> torch.nn.Module:
    """The measure's classifier over num_classes + 1 outputs, trained on the held-out records
    `train_idx` and the "none" images: the experiment's architecture (`gan.classifier: model`)
    or eigenfaces fitted on those records and their :func:`face_views` (`eigenfaces`)."""
    num_classes = dataset.num_classes
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(exp.seed + 1)
        if exp.gan.classifier == "eigenfaces":
            x, y = dataset.batch(train_idx)
            faces = face_views(x)
            labels = y.repeat(len(faces) // len(x))
            model = Eigenfaces(dataset.input_shape, min(EIGENFACES_COMPONENTS, len(faces) - 1),
                               num_classes + 1).fit_space(faces)
            none = torch.full((len(nones),), num_classes, dtype=labels.dtype)
            return model.fit_head(torch.cat([faces, nones]), torch.cat([labels, none]))
        model = build_target(exp.model, dataset.input_shape, num_classes + 1)
    data = WithGenerated(dataset, nones, label=num_classes)
    train_model(model, data, np.concatenate([train_idx, data.indices()]), None, exp.training,
                exp.gan.classifier_epochs, device, exp.seed + 1)
    return model


def build_measure(exp: Experiment, dataset: Dataset, device: torch.device) -> GanMeasure:
    """Train the independent classifier (with its "none" class) and set up the distances."""
    train_idx, rest_idx = classifier_split(exp, dataset)
    num_classes = dataset.num_classes
    n_none = max(8 * len(NONE_KINDS), len(train_idx) // num_classes)
    nones = none_images(exp, dataset, train_idx, n_none, seed=exp.seed + 2)
    model = train_classifier(exp, dataset, train_idx, nones, device)
    accuracy = evaluate(model, dataset, rest_idx, device)["accuracy"]
    model.cpu().eval()
    splits = experiment_splits(exp, dataset)
    victim = exp.gan.victim_class
    owners = [p for i, p in enumerate(splits.partitions) if i != exp.gan.attacker]
    trained = np.concatenate(owners)
    unseen = np.concatenate([rest_idx, *splits.partitions])  # never seen by the classifier
    rng = np.random.default_rng(exp.seed + 3)

    def inputs(idx: np.ndarray) -> torch.Tensor:
        if len(idx) > MAX_REFERENCE:
            idx = rng.choice(idx, MAX_REFERENCE, replace=False)
        return dataset.batch(np.sort(idx))[0]

    others = {int(c): inputs(unseen[dataset.y[unseen] == c])
              for c in range(num_classes) if c != victim}
    return GanMeasure(model, victim, num_classes,
                      reference=inputs(trained[dataset.y[trained] == victim]),
                      held_out=inputs(check_records(exp, dataset, rest_idx)),
                      others=others, accuracy=accuracy)


def check_records(exp: Experiment, dataset: Dataset, rest_idx: np.ndarray) -> np.ndarray:
    """The real victim-class records the success rule is checked on: those of the classifier's
    held-out rest and, where they are fewer than MIN_CHECK (a face has a few photographs), as
    many more of the class as there are outside every split (neither the federation nor the
    classifier ever saw them), up to MIN_CHECK."""
    victim = exp.gan.victim_class
    check = rest_idx[dataset.y[rest_idx] == victim]
    if len(check) >= MIN_CHECK:
        return check
    splits = experiment_splits(exp, dataset)
    used = np.concatenate([splits.nonmembers, splits.shadow, *splits.partitions])
    outside = np.setdiff1d(np.flatnonzero(dataset.y == victim), used)
    return np.sort(np.concatenate([check, outside[:MIN_CHECK - len(check)]]))


@torch.no_grad()
def measure_round(samples: torch.Tensor, measure: GanMeasure, refs: ReferenceSets,
                  dataset: Dataset) -> dict[str, float]:
    """The measures of one round's generated samples."""
    rows = to_pixels(samples, dataset)
    to_train = nearest_distance(rows, refs.trained)
    to_held_out = nearest_distance(rows, refs.held_out)
    return {
        **measure.score(samples),
        "nn_distance_train": to_train.mean().item(),
        "nn_distance_heldout": to_held_out.mean().item(),
        "closer_to_train": (to_train < to_held_out).float().mean().item(),
    }


def round_context(run_record: dict, server_round: int) -> dict:
    """The global model's accuracy after the round and the largest epsilon spent by then."""
    history = {h["round"]: h for h in run_record["history"]}[server_round]
    spent = [r.get("epsilon") for r in run_record["rounds"] if r["round"] <= server_round]
    spent = [e for e in spent if e is not None]
    return {"target_train_accuracy": history["train_accuracy"],
            "target_test_accuracy": history["test_accuracy"],
            "epsilon": max(spent) if spent else None}


def measure_attack(exp: Experiment, run_dir: str | Path, log=print) -> list[dict]:
    """Measure every recorded round; write gan/rounds.json, the figures and results.json.

    results.json holds one flat record per experiment: the last round's measures, the first
    attacked round's victim share and confidence, and the whole series under ``per_round``.
    """
    run_dir = Path(run_dir)
    dataset = experiment_dataset(exp)
    device = resolve_device(exp.device)
    view = SnapshotStore(run_dir / SNAPSHOT_DIR).view(local_view(exp.gan.attacker))
    refs = ReferenceSets(exp, dataset)
    measure = build_measure(exp, dataset, device)
    real_check = measure.real or {}
    log(f"{exp.name}: independent classifier accuracy {measure.accuracy:.3f}; held-out real "
        f"victim records: victim share {real_check.get('victim_share', float('nan')):.2f}, "
        f"relative distance {real_check.get('relative_distance', float('nan')):.2f}"
        + ("" if measure.resolved else " (the measure cannot resolve success)"))
    run_record = read_json(run_dir / RUN_FILE)
    real = torch.from_numpy(dataset.x[refs.trained_idx[:GRID_SAMPLES]]).float() / 255
    figures = run_dir / reporting.FIGURES / "gan"
    per_round = []
    for rec in view.records(kind=GENERATED_KIND):
        samples = view.read(rec)["x"].float()
        entry = {"round": rec.round,
                 **measure_round(samples, measure, refs, dataset),
                 **round_context(run_record, rec.round)}
        per_round.append(entry)
        generated = to_pixels(samples[:GRID_SAMPLES], dataset).view(-1, *dataset.input_shape)
        reporting.plot_sample_grid(generated.numpy(), real.numpy(),
                                   figures / f"round-{rec.round:04d}.png",
                                   f"{exp.name}: round {rec.round}, victim class "
                                   f"{exp.gan.victim_class}")
    if not per_round:
        raise ValueError(f"{exp.name}: the GAN attacker recorded no samples in {run_dir}")
    write_json(run_dir / ROUNDS_FILE, per_round)
    reporting.plot_series(per_round, ("victim_share", "none_share", "victim_confidence"),
                          figures / "victim_share.png",
                          f"{exp.name}: independent classifier on generated samples",
                          hline=SUCCESS_SHARE)
    reporting.plot_series(per_round, ("relative_distance",), figures / "relative_distance.png",
                          f"{exp.name}: kernel distance to the victim's class (1: nearest "
                          "other class)", ylim=None, hline=SUCCESS_DISTANCE)
    record = summary(exp, per_round, measure.anchors())
    record["nn_distance_real"] = nearest_distance(refs.held_out, refs.trained).mean().item()
    reporting.write_results(run_dir, [record], GAN_COLUMNS)
    return [record]


def summary(exp: Experiment, per_round: list[dict], anchors: dict) -> dict:
    first, last = per_round[0], per_round[-1]
    privacy = exp.privacy
    successes = [r["round"] for r in per_round if r["success"]]
    return {
        "experiment": exp.name, "scenario": exp.scenario, "attack": "gan",
        "attacker": f"participant-{exp.gan.attacker}", "victim_class": exp.gan.victim_class,
        "first_round": first["round"], "round": last["round"],
        "generator_steps": exp.gan.generator_steps,
        "victim_share_first": first["victim_share"],
        "victim_confidence_first": first["victim_confidence"],
        "relative_distance_first": first["relative_distance"],
        **{k: v for k, v in last.items() if k != "round"},
        "first_success_round": successes[0] if successes else None,
        **anchors,
        "noise_multiplier": privacy.noise_multiplier if privacy else None,
        "share_fraction": privacy.share_fraction if privacy else None,
        "per_round": per_round,
    }
