# %% [markdown]
# # Audit a model and data of your own, from Python
#
# A federation of 3 participants trains *your* model on *your* records (a CSV written here); the
# aggregator records what it sees; fedattack's membership attacks then ask how much the trained
# model leaks about participant 1's records. Everything goes through the Python API
# (`fedattack.build_experiment`, `fedattack.check`, `fedattack.run`, the returned `Run`).
#
# Run it as a script (`python examples/audit_your_model.py [WORK_DIR]`, a few minutes on two
# cores) or open it as a notebook (Jupyter, VS Code: the `# %%` lines are cells).

# %%
import sys
from pathlib import Path

import numpy as np

import fedattack

work = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/audit-your-model").resolve()
work.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## Your data: a CSV of numeric features and a label column
#
# 2,000 records of 20 features in 10 classes, each class a noisy centre: noisy enough that a
# small network memorises its training records rather than the centres.

# %%
rng = np.random.default_rng(0)
centres = rng.normal(size=(10, 20))
labels = rng.integers(0, 10, size=2000)
features = centres[labels] + rng.normal(scale=2.0, size=(2000, 20))
header = ",".join([f"f{i}" for i in range(20)] + ["diagnosis"])
rows = [",".join([*(f"{v:.5f}" for v in x), f"class-{y}"]) for x, y in
        zip(features, labels, strict=True)]
(work / "records.csv").write_text("\n".join([header, *rows]) + "\n")

# %% [markdown]
# ## Your model: a module in a file of your own
#
# fedattack calls the factory with the `kwargs` you give, plus `input_shape` and `num_classes`
# where its signature names them.

# %%
(work / "mymodels.py").write_text('''
from torch import nn


class TabularNet(nn.Module):
    def __init__(self, input_shape, num_classes, hidden=128):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], hidden), nn.Tanh(),
                                  nn.Linear(hidden, hidden), nn.Tanh())
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.head(self.body(x))
''')

# %% [markdown]
# ## The experiment: a federation of 3, attacked by its aggregator
#
# The same fields as the YAML files under `experiments/` (see the reference of the schema).
# `fedattack.check` runs what `fedattack validate` runs: your module imports, builds, runs a batch
# forward and backward, and the splits fit in your data.

# %%
exp = fedattack.build_experiment(
    name="audit-your-model",
    seed=0,
    scenario="federated",
    python_path=[str(work)],
    data={"dataset": {"csv": str(work / "records.csv"), "label": "diagnosis"},
          "train_size": 200, "nonmember_size": 600,
          "knowledge": {"train_members": 50, "train_nonmembers": 50,
                        "test_members": 50, "test_nonmembers": 50}},
    model={"factory": "mymodels:TabularNet", "kwargs": {"hidden": 128}},
    training={"optimizer": "adam", "lr": 0.002, "batch_size": 32},
    federation={"num_participants": 3, "rounds": 5, "local_epochs": 5},
    attacker={"kind": "global", "mode": "passive", "targets": [1]},
    attack={"attacks": ["threshold-loss", "whitebox"], "epochs": 15},
)
fedattack.check(exp)

# %% [markdown]
# ## Run it: train, record, attack
#
# A rerun with the same directory resumes where an interrupted one stopped, and reads a finished
# one back without recomputing it.

# %%
run = fedattack.run(exp, work / "run")
print(f"global model after round {len(run.history) - 1}: "
      f"test accuracy {run.history[-1]['test_accuracy']:.3f}")
print(run.table())

# %% [markdown]
# ## Read the results
#
# Each row is a typed `ResultRow`: its figures carry 95% bootstrap intervals, and a TPR at an FPR
# the non-members cannot resolve is `None`, never a number. A learnt attack that does worse than
# the loss threshold on the same targets is flagged (`undertrained`), one below chance beyond its
# interval too (`inverted`): read them as failures, not as figures of leakage. The strongest
# attack is chosen on one half of the targets and reported on the other (`held_out`).

# %%
for row in run.results:
    f = row.figures
    verdict = ("; learnt less than the loss threshold on the same targets: it failed to learn"
               if row.undertrained else "")
    verdict += "; below chance beyond its interval: inverted" if row.inverted else ""
    print(f"{row.attack:>15} on {row.victim}: AUC {f.auc:.3f} "
          f"[{f.auc_ci[0]:.3f}, {f.auc_ci[1]:.3f}]{verdict}")
for row in run.strongest():
    held = row.held_out
    print(f"strongest: {row.attack} ({row.strongest_chosen_on}); on the other half "
          f"AUC {held.auc:.3f} [{held.auc_ci[0]:.3f}, {held.auc_ci[1]:.3f}]")

roc = run.roc("whitebox")
low = roc.fpr <= 0.1
print(f"white-box ROC: {len(roc.fpr)} points, TPR {roc.tpr[low].max():.3f} at FPR <= 0.1 "
      f"(lowest resolvable FPR {roc.min_resolvable_fpr:.3f})")
print("figures:", ", ".join(sorted(run.figures)))
