"""Regenerate flwr_datasets_partitions.json with flwr-datasets' own DirichletPartitioner.

flwr-datasets needs Hugging Face `datasets`; its partitioners only read a dataset's
`num_rows`, `unique(column)`, `__getitem__(column)` and `__len__`, so a stand-in object carries
the labels. Run with the unpacked wheel on the path, e.g.:
  pip download flwr-datasets==0.6.1 --no-deps -d /tmp/fd && unzip /tmp/fd/*.whl -d /tmp/fd/src
  PYTHONPATH=/tmp/fd/src python tests/data/make_flwr_datasets_partitions.py
"""

import json
import sys
import types
from pathlib import Path

import numpy as np


class Table:  # the parts of datasets.Dataset the partitioners read
    def __init__(self, labels):
        self.labels = list(map(int, labels))
        self.num_rows = len(self.labels)

    def __len__(self):
        return self.num_rows

    def unique(self, column):
        return sorted(set(self.labels))

    def __getitem__(self, column):
        return self.labels


stub = types.ModuleType("datasets")
stub.Dataset = Table
stub.DatasetDict = dict
sys.modules["datasets"] = stub
fake_package = types.ModuleType("flwr_datasets")  # skip its package __init__ (FederatedDataset)
fake_package.__path__ = []
sys.modules["flwr_datasets"] = fake_package


def load(name):
    import importlib.util
    root = next(Path(p) for p in sys.path if (Path(p) / "flwr_datasets").is_dir())
    pkg = root / "flwr_datasets"
    for mod in ("common", "common.typing", "partitioner", "partitioner.partitioner",
                f"partitioner.{name}"):
        full = f"flwr_datasets.{mod}"
        if full in sys.modules and mod != "partitioner":
            continue
        path = pkg / (mod.replace(".", "/") + ".py")
        if not path.exists():
            path = pkg / mod.replace(".", "/") / "__init__.py"
        if mod in ("common", "partitioner"):  # namespace only, no package __init__
            m = types.ModuleType(full)
            m.__path__ = [str(path.parent)]
            sys.modules[full] = m
            continue
        spec = importlib.util.spec_from_file_location(full, path)
        m = importlib.util.module_from_spec(spec)
        sys.modules[full] = m
        spec.loader.exec_module(m)
    return sys.modules[f"flwr_datasets.partitioner.{name}"]


def main():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 600)
    D = load("dirichlet_partitioner").DirichletPartitioner
    cases = []
    settings = [(0.5, 10, False, True, 42), (0.1, 5, True, True, 7), (5.0, 10, False, False, 3),
                ([0.3, 1.0, 3.0, 0.5, 2.0], 10, True, True, 11),
                (2.0, 105, False, True, 32)]  # met only at the 11th draw (the 10th redraw)
    for alpha, msize, balance, shuffle, seed in settings:
        p = D(num_partitions=5, partition_by="label", alpha=alpha, min_partition_size=msize,
              self_balancing=balance, shuffle=shuffle, seed=seed)
        p.dataset = Table(labels)
        _ = p.num_partitions
        cases.append({"kind": "dirichlet", "num_partitions": 5, "alpha": alpha,
                      "min_partition_size": msize, "self_balancing": balance, "shuffle": shuffle,
                      "seed": seed,
                      "partitions": [list(map(int, p._partition_id_to_indices[i]))
                                     for i in range(5)]})
    out = Path(__file__).with_name("flwr_datasets_partitions.json")
    out.write_text(json.dumps({"source": "flwr-datasets 0.6.1", "labels": labels.tolist(),
                               "cases": cases}) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
