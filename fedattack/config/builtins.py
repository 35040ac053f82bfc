"""The built-in datasets' and models' names, which the config accepts without importing their
registries (`fedattack.data.registry`, `fedattack.models`), so that parsing a YAML imports
neither torch nor the loaders. The registries' keys must equal these (tests/test_lazy_parse.py);
a dataset or model added to a registry is added here too.
"""

from __future__ import annotations

# `fedattack.data.registry._registry()`, sorted as `dataset_names()` lists them.
DATASETS = ("cifar10", "cifar100", "fashion-mnist", "mnist", "orl-faces", "purchase100",
            "purchase100-synth", "texas100", "texas100-synth")

# `fedattack.models.MODELS`, in its order.
MODELS = ("fc", "purchase-fc", "texas-fc", "alexnet", "resnet20", "resnet32", "resnet110",
          "densenet-bc-100-12", "densenet-bc-190-40", "cnn", "cnn-gan")
