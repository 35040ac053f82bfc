"""The ground truth of membership: who trains on which records, which are held out, what the
attacker knows and which records it is evaluated on.

One seeded permutation of the dataset's indices is cut into non-members (the target model's test
set), the attacker's shadow data, and the member pool the training sets are drawn from. The
attacker's known members and the member targets are disjoint draws from the union of the
training sets; its known non-members and the non-member targets, from the non-members.

In the run directory, `splits/membership.npz` holds what only the evaluation may read and
`splits/knowledge.npz` what an attacker may read.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedattack.data.registry import save_npz
from fedattack.io import write_json

if TYPE_CHECKING:
    from fedattack.config import Experiment

SPLITS_DIR = "splits"
MEMBERSHIP_FILE = "membership.npz"
KNOWLEDGE_FILE = "knowledge.npz"
SIZES_FILE = "splits.json"


@dataclass(frozen=True, eq=False)
class Splits:
    """Index arrays into the dataset, each sorted.

    `partitions` has one training set per participant (federated), [D] (stand-alone) or
    [D, D_delta] (fine-tuning).
    """

    partitions: list[np.ndarray]
    nonmembers: np.ndarray
    shadow: np.ndarray
    known_members: np.ndarray
    known_nonmembers: np.ndarray
    target_members: np.ndarray
    target_nonmembers: np.ndarray

    def members(self) -> np.ndarray:
        """Sorted union of the partitions."""
        return np.unique(np.concatenate(self.partitions))


@dataclass(frozen=True, eq=False)
class Knowledge:
    """What an attacker may read: `targets` mixes member and non-member targets, unlabelled."""

    known_members: np.ndarray
    known_nonmembers: np.ndarray
    shadow: np.ndarray
    targets: np.ndarray


def make_splits(num_records: int, exp: Experiment) -> Splits:
    """The experiment's splits of a dataset of num_records records; a pure function of exp.seed.

    With `data.overlap`, each participant's training set is drawn independently from the whole
    member pool (every record not reserved for non-members or shadow data), so sets may share
    records; otherwise the sets are disjoint.
    """
    data, knowledge = exp.data, exp.data.knowledge
    _check_size(num_records, exp)
    rng = np.random.default_rng(exp.seed)
    order = rng.permutation(num_records)
    cuts = [data.nonmember_size, data.nonmember_size + data.shadow_size]
    nonmembers, shadow, pool = np.split(order, cuts)
    partitions = _partitions(pool, exp, rng)
    members = np.unique(np.concatenate(partitions))
    known_members, target_members = _draw(
        members, knowledge.train_members, knowledge.test_members, "members", rng
    )
    known_nonmembers, target_nonmembers = _draw(
        nonmembers, knowledge.train_nonmembers, knowledge.test_nonmembers, "non-members", rng
    )
    return Splits(
        partitions=[np.sort(p) for p in partitions],
        nonmembers=np.sort(nonmembers),
        shadow=np.sort(shadow),
        known_members=known_members,
        known_nonmembers=known_nonmembers,
        target_members=target_members,
        target_nonmembers=target_nonmembers,
    )


def _training_records(exp: Experiment) -> int:
    """Records the training sets take out of the pool."""
    if exp.scenario == "federated" and not exp.data.overlap:
        return exp.data.train_size * exp.federation.num_participants
    return exp.data.train_size


def _check_size(num_records: int, exp: Experiment) -> None:
    data = exp.data
    training = _training_records(exp)
    needed = data.nonmember_size + data.shadow_size + training
    if needed > num_records:
        raise ValueError(
            f"{data.dataset} has {num_records} records but the splits need {needed} "
            f"({data.nonmember_size} non-members + {data.shadow_size} shadow + {training} "
            "training)"
        )


def _partitions(pool: np.ndarray, exp: Experiment, rng: np.random.Generator) -> list[np.ndarray]:
    size = exp.data.train_size
    if exp.scenario == "federated":
        count = exp.federation.num_participants
        if exp.data.overlap:
            return [rng.choice(pool, size, replace=False) for _ in range(count)]
        return list(pool[: count * size].reshape(count, size))
    train = pool[:size]
    if exp.scenario == "finetune":
        base = round(size * (1 - exp.training.finetune_fraction))
        if not 0 < base < size:
            raise ValueError(f"train_size {size} is too small to hold back a fine-tuning share")
        return [train[:base], train[base:]]
    return [train]


def _draw(
    pool: np.ndarray, known: int, targets: int, what: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint random subsets of pool, sorted: the attacker's known ones and the targets."""
    if known + targets > len(pool):
        raise ValueError(
            f"knowledge needs {known} known + {targets} target {what} but only {len(pool)} "
            f"{what} exist"
        )
    picked = rng.permutation(pool)[: known + targets]
    return np.sort(picked[:known]), np.sort(picked[known:])


def save_splits(splits: Splits, run_dir: str | Path) -> None:
    """Write the ground truth, the attacker's knowledge and the sizes under run_dir/splits."""
    folder = Path(run_dir) / SPLITS_DIR
    partitions = {f"partition_{i}": p for i, p in enumerate(splits.partitions)}
    save_npz(
        folder / MEMBERSHIP_FILE,
        **partitions,
        nonmembers=splits.nonmembers,
        target_members=splits.target_members,
        target_nonmembers=splits.target_nonmembers,
    )
    # Sorting the targets by index hides their membership as well as a shuffle would: indices
    # were dealt to members and non-members by a random permutation.
    targets = np.sort(np.concatenate([splits.target_members, splits.target_nonmembers]))
    save_npz(
        folder / KNOWLEDGE_FILE,
        known_members=splits.known_members,
        known_nonmembers=splits.known_nonmembers,
        shadow=splits.shadow,
        targets=targets,
    )
    sizes = {f.name: len(getattr(splits, f.name)) for f in fields(Splits)}
    sizes["partitions"] = [len(p) for p in splits.partitions]
    write_json(folder / SIZES_FILE, sizes)


def load_membership(run_dir: str | Path) -> Splits:
    """The full ground truth (for the evaluation only)."""
    folder = Path(run_dir) / SPLITS_DIR
    with np.load(folder / MEMBERSHIP_FILE, allow_pickle=False) as truth:
        count = sum(name.startswith("partition_") for name in truth.files)
        partitions = [truth[f"partition_{i}"] for i in range(count)]
        held_out = {
            name: truth[name] for name in ("nonmembers", "target_members", "target_nonmembers")
        }
    known = load_knowledge(run_dir)
    return Splits(
        partitions=partitions,
        shadow=known.shadow,
        known_members=known.known_members,
        known_nonmembers=known.known_nonmembers,
        **held_out,
    )


def load_knowledge(run_dir: str | Path) -> Knowledge:
    """What an attacker may read."""
    with np.load(Path(run_dir) / SPLITS_DIR / KNOWLEDGE_FILE, allow_pickle=False) as known:
        return Knowledge(**{f.name: known[f.name] for f in fields(Knowledge)})
