"""The ground truth of membership: who trains on which records, which are held out, what the
attacker knows and which records it is evaluated on.

One seeded permutation of the dataset's indices is cut into non-members (the target model's test
set), the attacker's shadow data, and the member pool the training sets are drawn from.

An attack is about a *victim*: the union of some participants' training sets (all of them in the
stand-alone scenario; one participant for each target of a global federated attacker; the other
participants for a local attacker; D or D-delta when fine-tuning: the threat model's
:func:`fedattack.observation.victim_groups`). For each victim, the attacker's known members and
the member targets are disjoint draws from the victim's records; its known non-members and the
non-member targets, from the non-members, or from the records of the `against` partitions
(Table IX distinguishes D from D-delta). Under label skew (`data.nonmember_labels`, by default
for dirichlet and by-class partitions) the non-members drawn from the held-out pool have, class
by class, the labels of the members drawn beside them.

In the run directory, `splits/membership.npz` holds what only the evaluation may read and
`splits/knowledge.npz` what an attacker may read; arrays of a victim are stored under
``<victim>__<name>``.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedattack.data import partition
from fedattack.data.files import save_npz
from fedattack.io import (
    CHECKSUMS,
    CorruptedFile,
    inside,
    read_json,
    verify_checksums,
    write_checksums,
    write_json,
)
from fedattack.observation import ALL, victim_groups

if TYPE_CHECKING:
    from fedattack.config import Experiment

SPLITS_DIR = "splits"
MEMBERSHIP_FILE = "membership.npz"
KNOWLEDGE_FILE = "knowledge.npz"
SIZES_FILE = "splits.json"
RECORDS_FILE = "records.json"  # the digest of a user's dataset the splits index into


SEP = "__"  # between a victim's name and an array name in the .npz files


@dataclass(frozen=True, eq=False)
class Victim:
    """The records one attack is about: members of `partitions`' union versus non-members."""

    name: str
    partitions: tuple[int, ...]
    known_members: np.ndarray
    known_nonmembers: np.ndarray
    target_members: np.ndarray
    target_nonmembers: np.ndarray
    against: tuple[int, ...] = ()  # partitions of the negatives; () for held-out non-members

    def targets(self) -> np.ndarray:
        """Member and non-member targets, sorted by index (which hides their membership as well
        as a shuffle would: indices were dealt to members and non-members by a random
        permutation)."""
        return np.sort(np.concatenate([self.target_members, self.target_nonmembers]))


@dataclass(frozen=True, eq=False)
class Splits:
    """Index arrays into the dataset, each sorted.

    `partitions` has one training set per participant (federated), [D] (stand-alone) or
    [D, D_delta] (fine-tuning); `victims` the knowledge and targets of each attacked victim.
    """

    partitions: list[np.ndarray]
    nonmembers: np.ndarray
    shadow: np.ndarray
    victims: list[Victim]

    def members(self) -> np.ndarray:
        """Sorted union of the partitions."""
        return np.unique(np.concatenate(self.partitions))

    def victim(self, name: str = ALL) -> Victim:
        return _by_name(self.victims, name)


@dataclass(frozen=True, eq=False)
class Knowledge:
    """What an attacker may read about one victim: `targets` mixes member and non-member
    targets, unlabelled."""

    victim: str
    known_members: np.ndarray
    known_nonmembers: np.ndarray
    shadow: np.ndarray
    targets: np.ndarray


def _by_name(victims, name: str):
    for v in victims:
        if v.name == name:
            return v
    raise KeyError(f"no victim {name!r}; known: {', '.join(v.name for v in victims)}")


def make_splits(num_records: int, exp: Experiment, labels: np.ndarray | None = None,
                members: np.ndarray | list[np.ndarray] | None = None) -> Splits:
    """The experiment's splits of a dataset of num_records records; a pure function of exp.seed
    (and of `members`).

    With `data.overlap`, each participant's training set is drawn independently from the whole
    member pool (every record not reserved for non-members or shadow data), so sets may share
    records; otherwise the sets are disjoint. `members`, the training records of a model trained
    elsewhere (`data.members`), is the one partition; non-members and shadow data are drawn from
    the other records. A list of arrays is a federation's partitions as a Flower app of the
    user's dealt them (`read_partition_members`), kept as they are.
    """
    data, knowledge = exp.data, exp.data.knowledge
    rng = np.random.default_rng(exp.seed)
    cuts = [data.nonmember_size, data.nonmember_size + data.shadow_size]
    if members is None:
        _check_size(num_records, exp)
        order = rng.permutation(num_records)
        nonmembers, shadow, pool = np.split(order, cuts)
        partitions = _partitions(pool, exp, rng, labels)
    elif isinstance(members, list):  # a user's federation: its own partitions
        others = np.setdiff1d(np.arange(num_records), np.concatenate(members))
        if len(others) < cuts[1]:
            raise ValueError(f"data.members: {len(others)} records are in no partition, fewer "
                             f"than the {data.nonmember_size} non-members + {data.shadow_size} "
                             "shadow records the splits need; lower data.nonmember_size")
        nonmembers, shadow, _ = np.split(rng.permutation(others), cuts)
        partitions = [np.asarray(p) for p in members]
    else:
        others = np.setdiff1d(np.arange(num_records), members)
        _check_size(len(others) + data.train_size, exp)
        nonmembers, shadow, _ = np.split(rng.permutation(others), cuts)
        partitions = [np.asarray(members)]
    victims = []
    for name, owners, against in victim_groups(exp):
        members = _union(partitions, owners)
        negatives = _union(partitions, against) if against else nonmembers
        known_members, target_members = _draw(
            members, knowledge.train_members, knowledge.test_members, f"members of {name}", rng
        )
        if against or not _matched(exp):
            known_nonmembers, target_nonmembers = _draw(
                negatives, knowledge.train_nonmembers, knowledge.test_nonmembers,
                f"non-members of {name}", rng
            )
        else:
            known_nonmembers, target_nonmembers = _draw_matched(
                negatives, labels, known_members, target_members, knowledge.train_nonmembers,
                f"non-members of {name}", rng
            )
        victims.append(Victim(name, owners, known_members, known_nonmembers, target_members,
                              target_nonmembers, against))
    return Splits(
        partitions=[np.sort(p) for p in partitions],
        nonmembers=np.sort(nonmembers),
        shadow=np.sort(shadow),
        victims=victims,
    )


PARTITION_KEY = "partition-{}"  # the arrays of a federated data.members file


def read_partition_members(exp: Experiment, num_records: int) -> list[np.ndarray]:
    """Each partition's training records from data.members (a .npz holding ``partition-0`` ..
    ``partition-<n-1>``, read without pickle), sorted; ConfigError naming the field unless there
    is one non-empty array of distinct record indices per participant and no record is in two
    partitions."""
    from fedattack.config import ConfigError

    path, field, n = Path(exp.data.members), "data.members", exp.federation.num_participants
    try:
        with np.load(path, allow_pickle=False) as held:
            arrays = {name: held[name] for name in held.files}
    except FileNotFoundError:
        raise ConfigError(f"{field}: {path} not found") from None
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ConfigError(f"{field}: {path} is not a .npz of record indices: "
                          f"{' '.join(str(err).split())[:120]}") from None
    wanted = [PARTITION_KEY.format(p) for p in range(n)]
    if sorted(arrays) != sorted(wanted):
        raise ConfigError(f"{field}: {path} holds {sorted(arrays)}, expected one array per "
                          f"participant: {', '.join(wanted)}")
    partitions = []
    for name in wanted:
        values = arrays[name]
        if values.ndim != 1 or values.dtype.kind not in "iu" or len(values) == 0:
            raise ConfigError(f"{field}: {name} must be a non-empty 1-D array of integer indices")
        unique = np.unique(values).astype(np.int64)
        if len(unique) != len(values) or unique[0] < 0 or unique[-1] >= num_records:
            raise ConfigError(f"{field}: {name} holds repeated indices or indices outside the "
                              f"dataset (0..{num_records - 1})")
        partitions.append(unique)
    every = np.concatenate(partitions)
    if len(np.unique(every)) != len(every):
        raise ConfigError(f"{field}: a record is in two partitions; the partitions of a "
                          "federation are disjoint")
    return partitions


def _union(partitions: list[np.ndarray], which: tuple[int, ...]) -> np.ndarray:
    return np.unique(np.concatenate([partitions[p] for p in which]))


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
            f"{data.dataset_name} has {num_records} records but the splits need {needed} "
            f"({data.nonmember_size} non-members + {data.shadow_size} shadow + {training} "
            "training)"
        )


def _partitions(pool: np.ndarray, exp: Experiment, rng: np.random.Generator,
                labels: np.ndarray | None) -> list[np.ndarray]:
    size = exp.data.train_size
    if exp.data.partition == "by-class":
        return _class_partitions(pool, exp, labels)
    if exp.data.partition in ("dirichlet", "quantity"):
        return _skewed_partitions(pool[: exp.federation.num_participants * size], exp, labels)
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


def _skewed_partitions(pool: np.ndarray, exp: Experiment,
                       labels: np.ndarray | None) -> list[np.ndarray]:
    """The IID training records (the same pool) dealt out with label or quantity skew."""
    data, n = exp.data, exp.federation.num_participants
    if data.partition == "quantity":
        positions = partition.quantity(len(pool), n, data.alpha, data.min_partition_size,
                                       seed=exp.seed)
    else:
        if labels is None:
            raise ValueError("data.partition dirichlet needs the dataset's labels")
        positions = partition.dirichlet(labels[pool], n, data.alpha, data.min_partition_size,
                                        data.self_balancing, shuffle=True, seed=exp.seed)
    return [pool[p] for p in positions]


def participant_classes(exp: Experiment, num_classes: int) -> list[list[int]]:
    """by-class: the classes each participant draws its records from."""
    n = exp.federation.num_participants
    if exp.data.classes is None:
        return [list(range(p, num_classes, n)) for p in range(n)]
    wanted = [exp.data.classes[p] for p in range(n)]
    unknown = sorted({c for cs in wanted for c in cs if c >= num_classes})
    if unknown:
        raise ValueError(f"data.classes names classes {unknown}; accepted: 0..{num_classes - 1}")
    return wanted


def _class_partitions(pool: np.ndarray, exp: Experiment,
                      labels: np.ndarray | None) -> list[np.ndarray]:
    """Each participant in turn takes the next `train_size` records of its classes from the
    (shuffled) pool; participants that share a class share out its records, never a record."""
    if labels is None:
        raise ValueError("data.partition by-class needs the dataset's labels")
    free = np.ones(len(pool), dtype=bool)
    partitions = []
    num_classes = int(labels.max()) + 1
    for p, classes in enumerate(participant_classes(exp, num_classes)):
        mine = np.flatnonzero(free & np.isin(labels[pool], classes))[: exp.data.train_size]
        if len(mine) < exp.data.train_size:
            raise ValueError(f"participant {p} needs {exp.data.train_size} records of classes "
                             f"{classes} but only {len(mine)} are left; lower data.train_size")
        free[mine] = False
        partitions.append(pool[mine])
    return partitions


def _draw(
    pool: np.ndarray, known: int, targets: int, what: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint random subsets of pool, sorted: the attacker's known ones and the targets.

    The targets are dealt first, so experiments that differ only in how much the attacker knows
    (Table VI) are evaluated on the same targets."""
    if known + targets > len(pool):
        raise ValueError(
            f"knowledge needs {known} known + {targets} target {what} but only {len(pool)} "
            f"{what} exist"
        )
    picked = rng.permutation(pool)[: known + targets]
    return np.sort(picked[targets:]), np.sort(picked[:targets])


LABEL_SKEWED = ("dirichlet", "by-class")  # partitions whose participants hold a few classes


def _matched(exp: Experiment) -> bool:
    """Whether non-members are drawn label by label like the members (`data.nonmember_labels`)."""
    choice = exp.data.nonmember_labels
    if choice == "auto":  # an experiment without a membership attack draws targets unused
        return exp.data.partition in LABEL_SKEWED and exp.attack is not None
    return choice == "matched"


def label_carries_membership(exp: Experiment) -> bool:
    """Whether `exp` attacks membership with population non-members under a label-skewed
    partition: a victim's members are then of its few classes and its non-members of all, so
    the label alone tells many of them apart, and an attack's figures measure the skew."""
    return (exp.attack is not None and exp.data.partition in LABEL_SKEWED
            and exp.data.nonmember_labels == "population")


def _draw_matched(
    pool: np.ndarray, labels: np.ndarray | None, known_members: np.ndarray,
    target_members: np.ndarray, known: int, what: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Known non-members and non-member targets from pool with, class by class, the labels of
    the known members and of the member targets: under label skew a victim's members are of a
    few classes, and population non-members would let the label alone tell them apart.

    The targets match the member targets one for one (the sets are balanced); `known` known
    non-members match the known members' labels, or their label frequencies (drawn with
    replacement) when the two known sets differ in size."""
    if labels is None:
        raise ValueError("data.nonmember_labels matched needs the dataset's labels")
    source = known_members if len(known_members) else target_members
    known_labels = labels[source]
    if known != len(source):
        known_labels = rng.choice(known_labels, known, replace=True) if known else known_labels[:0]
    num_classes = int(labels.max()) + 1
    need_known = np.bincount(known_labels, minlength=num_classes)
    need_targets = np.bincount(labels[target_members], minlength=num_classes)
    shuffled = rng.permutation(pool)
    have = labels[shuffled]
    known_drawn, targets = [], []
    for c in np.flatnonzero(need_known + need_targets):
        of_c = shuffled[have == c]
        wanted = need_known[c] + need_targets[c]
        if len(of_c) < wanted:
            raise ValueError(
                f"{what}: {wanted} of class {c} are needed to match the members' labels but the "
                f"held-out pool has {len(of_c)}; raise data.nonmember_size, lower the knowledge "
                "sizes, or set data.nonmember_labels: population"
            )
        targets.append(of_c[: need_targets[c]])
        known_drawn.append(of_c[need_targets[c]: wanted])
    return np.sort(np.concatenate(known_drawn)), np.sort(np.concatenate(targets))


def knowledge_of(splits: Splits, victim: str = ALL) -> Knowledge:
    """What an attacker may know of one victim, taken from the full splits (for the attackers
    that derive the splits themselves: the aggregator and a malicious participant)."""
    v = splits.victim(victim)
    return Knowledge(v.name, v.known_members, v.known_nonmembers, splits.shadow, v.targets())


def _split_files(splits: Splits) -> tuple[dict, dict, dict]:
    """The arrays of membership.npz and knowledge.npz, and the content of splits.json."""
    truth = {f"partition_{i}": p for i, p in enumerate(splits.partitions)}
    known = {"shadow": splits.shadow}
    for v in splits.victims:
        truth[f"{v.name}{SEP}target_members"] = v.target_members
        truth[f"{v.name}{SEP}target_nonmembers"] = v.target_nonmembers
        known[f"{v.name}{SEP}known_members"] = v.known_members
        known[f"{v.name}{SEP}known_nonmembers"] = v.known_nonmembers
        known[f"{v.name}{SEP}targets"] = v.targets()
    truth["nonmembers"] = splits.nonmembers
    sizes = {
        "partitions": [len(p) for p in splits.partitions],
        "nonmembers": len(splits.nonmembers),
        "shadow": len(splits.shadow),
        "victims": {v.name: {"partitions": list(v.partitions), "against": list(v.against),
                             **{f.name: len(getattr(v, f.name)) for f in fields(Victim)
                                if f.name not in ("name", "partitions", "against")}}
                    for v in splits.victims},
    }
    return truth, known, sizes


def save_splits(splits: Splits, run_dir: str | Path) -> None:
    """Write the ground truth, the attacker's knowledge and the sizes under run_dir/splits,
    then their checksums."""
    folder = inside(run_dir, SPLITS_DIR)
    truth, known, sizes = _split_files(splits)
    save_npz(folder / MEMBERSHIP_FILE, **truth)
    save_npz(folder / KNOWLEDGE_FILE, **known)
    write_json(folder / SIZES_FILE, sizes)
    write_checksums(folder, list(SPLIT_FILES))


def _holds(folder: Path, splits: Splits) -> bool:
    """Whether the split files in folder hold exactly `splits` (for a folder without checksums,
    written by an older fedattack)."""
    truth, known, sizes = _split_files(splits)
    try:
        for name, arrays in ((MEMBERSHIP_FILE, truth), (KNOWLEDGE_FILE, known)):
            with np.load(folder / name, allow_pickle=False) as stored:
                if sorted(stored.files) != sorted(arrays) or not all(
                        np.array_equal(stored[k], a) for k, a in arrays.items()):
                    return False
        return read_json(folder / SIZES_FILE) == json.loads(json.dumps(sizes))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return False


def ensure_splits(splits: Splits, run_dir: str | Path) -> None:
    """Write the splits into run_dir if absent; otherwise check they are these splits (by their
    checksums, or, in a folder written before checksums, by their content, then add them)."""
    folder = inside(run_dir, SPLITS_DIR)
    if not (folder / MEMBERSHIP_FILE).exists():
        save_splits(splits, run_dir)
    elif not (folder / CHECKSUMS).exists():
        if not _holds(folder, splits):
            raise CorruptedFile(folder, "does not hold this experiment's splits", REWRITE)
        write_checksums(folder, list(SPLIT_FILES))
    else:
        check_splits(run_dir)


def ensure_same_records(digest: str, run_dir: str | Path) -> None:
    """Record the digest of the dataset the splits index into (a user's dataset, whose files may
    change), or check that it is still the same: an edited CSV under unchanged splits would
    attack and score other records than the model trained on."""
    path = inside(run_dir, Path(SPLITS_DIR) / RECORDS_FILE)
    if not path.exists():
        write_json(path, {"dataset": digest})
        return
    recorded = read_json(path).get("dataset")
    if recorded != digest:
        raise CorruptedFile(path, f"was split from other records ({recorded}, now {digest}): "
                            "data.dataset changed since the run began",
                            "restore the dataset's files, or run into another --out")


SPLIT_FILES = (MEMBERSHIP_FILE, KNOWLEDGE_FILE, SIZES_FILE)
REWRITE = "delete the splits folder and run again to rewrite it from the config"


def check_splits(run_dir: str | Path, names: tuple[str, ...] = SPLIT_FILES) -> Path:
    """The splits folder of run_dir after checking the named files against their checksums
    (CorruptedFile, one line naming the file, if one was changed: swapped member and non-member
    arrays would otherwise flip every metric)."""
    folder = Path(run_dir) / SPLITS_DIR
    verify_checksums(folder, list(names), f"{REWRITE} ({folder})")
    return folder


def victim_names(run_dir: str | Path) -> list[str]:
    """The victims of a run, in the order the experiment lists them."""
    return list(read_json(check_splits(run_dir, (SIZES_FILE,)) / SIZES_FILE)["victims"])


def load_membership(run_dir: str | Path) -> Splits:
    """The full ground truth (for the evaluation only)."""
    folder = check_splits(run_dir)
    sizes = read_json(folder / SIZES_FILE)
    with np.load(folder / MEMBERSHIP_FILE, allow_pickle=False) as truth:
        partitions = [truth[f"partition_{i}"] for i in range(len(sizes["partitions"]))]
        nonmembers = truth["nonmembers"]
        held_out = {name: {k: truth[f"{name}{SEP}{k}"]
                           for k in ("target_members", "target_nonmembers")}
                    for name in sizes["victims"]}
    victims = []
    for name, info in sizes["victims"].items():
        known = load_knowledge(run_dir, name)
        victims.append(Victim(name, tuple(info["partitions"]), known.known_members,
                              known.known_nonmembers, **held_out[name],
                              against=tuple(info["against"])))
    return Splits(partitions=partitions, nonmembers=nonmembers, shadow=known.shadow,
                  victims=victims)


def load_knowledge(run_dir: str | Path, victim: str = ALL) -> Knowledge:
    """What an attacker may read about one victim."""
    folder = check_splits(run_dir, (KNOWLEDGE_FILE,))
    with np.load(folder / KNOWLEDGE_FILE, allow_pickle=False) as known:
        if f"{victim}{SEP}targets" not in known.files:
            raise KeyError(f"no victim {victim!r} in the knowledge of {run_dir}")
        arrays = {k: known[f"{victim}{SEP}{k}"]
                  for k in ("known_members", "known_nonmembers", "targets")}
        return Knowledge(victim, shadow=known["shadow"], **arrays)
