"""Datasets by name, and the splits that are the ground truth of membership.

`load_dataset(name)` returns a `Dataset` (see `registry`); `make_splits` cuts it into training
sets, held-out non-members, shadow data and the attacker's knowledge (see `splits`).
"""

from fedattack.data.registry import (
    Dataset,
    DatasetUnavailable,
    data_root,
    dataset_names,
    download,
    load_dataset,
    obtained_by,
)
from fedattack.data.splits import (
    ALL,
    Knowledge,
    Splits,
    Victim,
    knowledge_of,
    load_knowledge,
    load_membership,
    make_splits,
    save_splits,
    victim_groups,
    victim_names,
)

__all__ = [
    "ALL",
    "Victim",
    "knowledge_of",
    "victim_groups",
    "victim_names",
    "Dataset",
    "DatasetUnavailable",
    "Knowledge",
    "Splits",
    "data_root",
    "dataset_names",
    "obtained_by",
    "download",
    "load_dataset",
    "load_knowledge",
    "load_membership",
    "make_splits",
    "save_splits",
]
