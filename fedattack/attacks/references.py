"""Reference models for LiRA and RMIA: who they train on, how they are trained, where they are kept.

**What the attacker may train them on.** The attacker's population is the records its threat
model grants it, used without their membership labels: the shadow records (`data.shadow_size`)
and its known members and non-members (`data.knowledge.train_*`). The evaluation targets are
never in it (asserted). Offline attacks train every reference on population records only, so
the references never see a target; online attacks add the (unlabelled) targets to the pool, and
each target is then IN exactly half of the references.

**Paired halves.** The pool (one record dropped if its size is odd) is split into random halves
K / 2 times; references 2j and 2j + 1 train on the two halves of split j. Every pool record is
thus IN exactly K / 2 references and OUT of the others, and all references train on the same
number of records (which vectorised training needs).

**The recipe.** A reference has the target's architecture, initialisation scheme and training
configuration (`training`: optimizer, lr, schedule, batch size, weight decay) and is trained
centrally by :func:`fedattack.training.train_model` for `epochs` epochs: the target's epochs
stand-alone, ``rounds * local_epochs`` for a federated target. A central reference is what we
use for a federation: with IID partitions and one local epoch a round, FedAvg over the union of
the participants' records makes about one pass over every record per round, as central training
over that union does per epoch; simulating the federation in-process would multiply the cost by
the number of participants without changing what a reference is for (the distribution of a
record's signal when the record is out of, or in, the training set). It differs where the
federation differs from central training (non-IID partitions, many local epochs, DP-SGD, an
attacker that reads one participant's upload): there the reference is an approximation.

**Vectorised training.** Models without buffers or dropout (the FC nets) can be trained K at a
time (by default on CUDA only: on a CPU the K stacked models cost as much as K sequential ones,
or more, see benchmarks/reference_models.py): their parameters are stacked
(``torch.func.stack_module_state``) and one forward/backward pass steps all of them (an FC
net's Linear layers as one batched matrix product each, other models under ``vmap``);
each keeps its own data order (the shuffle of ``epoch_generator(seed_k, epoch)``, as sequential
training draws it), and Adam and SGD act element-wise, so the result equals K sequential
``train_model`` runs up to float rounding. Other models are trained one after the other.

**The cache.** A reference set is stored under ``<root>/references/<key>/`` where the key is the
SHA-256 of everything that determines it: the dataset's contents, the architecture, the
training recipe and epochs, and each reference's seed and training indices (not the trainer:
vectorised and sequential training give the same models to float tolerance). The root is the
campaign folder when the run lies in one (so the experiments of a campaign that share a
reference set train it once), else the run directory.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedattack import progress
from fedattack.config import TrainConfig
from fedattack.data.files import dataset_digest
from fedattack.io import CorruptedFile, inside, read_json, write_atomic, write_json
from fedattack.models.fc import ACTIVATIONS, FCNet
from fedattack.training import epoch_generator, lr_at, set_lr, train_model

CACHE_DIR = "references"
CACHE_VERSION = 1
CAMPAIGN_FILE = "campaign.yaml"  # the file that marks a campaign folder (fedattack.campaign)


def paired_halves(pool: np.ndarray, k: int, seed: int,
                  keep: np.ndarray | None = None) -> list[np.ndarray]:
    """K sorted training sets of len(pool) // 2 records: K / 2 random splits into halves.

    An odd pool first loses one random record not in `keep` (it is then OUT of every
    reference), so that every other record is IN exactly K / 2 references."""
    if k < 2 or k % 2:
        raise ValueError(f"reference models come in pairs: K must be even and >= 2, got {k}")
    pool = np.unique(np.asarray(pool, np.int64))
    if len(pool) < 2:
        raise ValueError(f"the attacker's population has {len(pool)} record(s); reference "
                         "models need at least 2 (raise data.shadow_size or the known records)")
    rng = np.random.default_rng(seed)
    if len(pool) % 2:
        droppable = pool if keep is None else np.setdiff1d(pool, keep)
        pool = np.setdiff1d(pool, rng.choice(droppable, 1))
    half = len(pool) // 2
    sets = []
    for _ in range(k // 2):
        order = rng.permutation(pool)
        sets += [np.sort(order[:half]), np.sort(order[half:])]
    return sets


def membership_matrix(records: np.ndarray, train_sets: list[np.ndarray]) -> np.ndarray:
    """(N, K) bool: whether reference k trained on record n."""
    return np.stack([np.isin(records, s) for s in train_sets], axis=1)


def vectorisable(model: nn.Module) -> bool:
    """Whether K copies can be trained as one vmap-ed model: no buffers (BatchNorm) and no
    randomness (dropout) that sequential training would draw differently."""
    return (not any(True for _ in model.buffers())
            and not any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules()))


CHAIN_ACTIVATIONS = tuple(ACTIVATIONS.values())  # FCNet's, element-wise


def linear_chain(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """An FCNet as its (name, module) chain of biased Linear layers and element-wise
    activations, which K stacked copies run as batched matrix products; None for any other
    model (vmap runs those)."""
    if not isinstance(model, FCNet):
        return None
    chain = [(f"features.{i}", m) for i, m in enumerate(model.features)]
    chain.append(("classifier", model.classifier))
    for _, m in chain:
        if isinstance(m, nn.Linear):
            if m.bias is None:
                return None
        elif not isinstance(m, CHAIN_ACTIVATIONS):
            return None
    return chain


def _optimizer(params: list[torch.Tensor], cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer of fedattack.training.make_optimizer, on raw tensors."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


def train_sequential(models: list[nn.Module], dataset, train_sets: list[np.ndarray],
                     seeds: list[int], cfg: TrainConfig, epochs: int, device: torch.device,
                     on_step: Callable[[], object] = lambda: None) -> list[nn.Module]:
    """Train each model in turn with train_model (seed_k shuffles reference k); `on_step` is
    called after each model."""
    for model, idx, seed in zip(models, train_sets, seeds, strict=True):
        train_model(model, dataset, idx, None, cfg, epochs, device, seed)
        on_step()
    return [m.cpu() for m in models]


def train_vectorised(models: list[nn.Module], dataset, train_sets: list[np.ndarray],
                     seeds: list[int], cfg: TrainConfig, epochs: int, device: torch.device,
                     on_step: Callable[[], object] = lambda: None) -> list[nn.Module]:
    """Train the K models together, as train_sequential would one by one (see module doc);
    `on_step` is called after each epoch."""
    from torch.func import functional_call, stack_module_state, vmap

    sizes = {len(s) for s in train_sets}
    if len(sizes) != 1:
        raise ValueError(f"vectorised training needs equal training sets, got sizes {sizes}")
    if not all(vectorisable(m) for m in models):
        raise ValueError("vectorised training needs models without buffers or dropout")
    (n,) = sizes
    models = [m.to(device) for m in models]
    stacked, _ = stack_module_state(models)
    chain = linear_chain(models[0])
    # the chain's weights are kept (K, in, out), the layout the batched products read; Adam and
    # SGD act element-wise, so the layout changes nothing of the arithmetic
    turned = {f"{name}.weight" for name, m in chain or () if isinstance(m, nn.Linear)}
    params = {name: (p.detach().transpose(1, 2) if name in turned else p.detach())
              .contiguous().clone().requires_grad_(True) for name, p in stacked.items()}
    base = copy.deepcopy(models[0]).to("meta")

    def loss(p: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(base, p, (x,)), y)

    def losses(p: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each model's mean loss on its own batch (K of them)."""
        if chain is None:
            return vmap(loss)(p, x, y)
        # A chain of Linear layers as batched matrix products, one (K, B, in) x (K, in, out)
        # per layer: what vmap computes, without its per-layer overhead (half the time on a CPU)
        h = x.reshape(x.shape[0], x.shape[1], -1)
        for name, layer in chain:
            if isinstance(layer, nn.Linear):
                h = torch.baddbmm(p[f"{name}.bias"].unsqueeze(1), h, p[f"{name}.weight"])
            else:
                h = layer(h)
        k, b = y.shape
        return F.cross_entropy(h.reshape(k * b, -1), y.reshape(-1),
                               reduction="none").reshape(k, b).mean(dim=1)

    optimizer = _optimizer(list(params.values()), cfg)
    sets = [np.asarray(s, np.int64) for s in train_sets]
    for epoch in range(epochs):
        set_lr(optimizer, lr_at(cfg, epoch))
        orders = np.stack([s[torch.randperm(n, generator=epoch_generator(seed, epoch)).numpy()]
                           for s, seed in zip(sets, seeds, strict=True)])
        for start in range(0, n, cfg.batch_size):
            batch = orders[:, start: start + cfg.batch_size]
            x, y = dataset.batch(batch.reshape(-1))
            x = x.to(device).reshape(*batch.shape, *x.shape[1:])
            y = y.to(device).reshape(batch.shape)
            optimizer.zero_grad(set_to_none=True)
            losses(params, x, y).sum().backward()  # sum: each model gets its own gradient
            optimizer.step()
        on_step()
    for k, model in enumerate(models):
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(params[name][k].T if name in turned else params[name][k])
    return [m.cpu() for m in models]


@dataclass(frozen=True)
class ReferenceSpec:
    """Everything that determines a reference set; `key()` names its cache folder."""

    dataset: str  # the dataset's name and a digest of its contents
    arch: dict
    recipe: dict
    epochs: int
    seeds: tuple[int, ...]
    train_sets: tuple[np.ndarray, ...]

    def describe(self) -> dict:
        return {"version": CACHE_VERSION, "dataset": self.dataset, "arch": self.arch,
                "recipe": self.recipe, "epochs": self.epochs, "seeds": list(self.seeds),
                "train_sets": [{"size": len(s), "sha256": _digest(s)} for s in self.train_sets]}

    def key(self) -> str:
        text = json.dumps(self.describe(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]


def _digest(indices: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(indices, dtype=np.int64).tobytes()).hexdigest()


def cache_root(run_dir: Path) -> Path:
    """The campaign folder when run_dir is one of its experiments, else run_dir."""
    parent = Path(run_dir).parent
    return parent if (parent / CAMPAIGN_FILE).is_file() else Path(run_dir)


class ReferenceSet:
    """K trained reference models, loaded from the cache or trained (and then cached)."""

    def __init__(self, spec: ReferenceSpec, models: list[nn.Module], trained: bool,
                 seconds: float) -> None:
        self.spec, self.models, self.trained, self.seconds = spec, models, trained, seconds

    @classmethod
    def obtain(cls, spec: ReferenceSpec, build: Callable[[int], nn.Module], dataset,
               cfg: TrainConfig, device: torch.device, root: Path,
               vectorised: bool | str = "auto",
               log: Callable[[str], None] = print) -> ReferenceSet:
        """The reference set of `spec`: read from ``root/references/<key>`` when there, else
        trained (vectorised when the model allows and `vectorised` is True, or "auto" on a
        CUDA device) and written there."""
        folder = inside(root, Path(CACHE_DIR) / spec.key())
        weights, meta = folder / "weights.npz", folder / "reference.json"
        started = time.perf_counter()
        stored = _read_cached(weights, meta, spec, log)
        if stored is not None:
            models = [build(seed) for seed in spec.seeds]
            load_cached(models, stored, weights)
            log(f"  reference models: {len(models)} read from the cache {folder}")
            return cls(spec, models, False, time.perf_counter() - started)
        models = [build(seed) for seed in spec.seeds]
        wanted = device.type == "cuda" if vectorised == "auto" else bool(vectorised)
        together = wanted and all(vectorisable(m) for m in models)
        log(f"  reference models: training {len(models)} "
            f"{'together (vectorised)' if together else 'one after the other'} on "
            f"{len(spec.train_sets[0])} records each, {spec.epochs} epochs")
        display = progress.active()  # a bar of models, or of epochs when trained together
        display.phase(*(("reference epoch", spec.epochs) if together
                        else ("reference model", len(models))))
        train = train_vectorised if together else train_sequential
        models = train(models, dataset, list(spec.train_sets), list(spec.seeds), cfg,
                       spec.epochs, device, display.advance)
        buffer = io.BytesIO()
        np.savez(buffer, **{f"{k}/{name}": v.detach().cpu().numpy()
                            for k, m in enumerate(models) for name, v in m.state_dict().items()})
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(weights, buffer.getvalue())
        # written last, with the weights' checksum: a set without it, or whose weights do not
        # match it, is not trusted
        write_json(meta, {**spec.describe(),
                          "weights_sha256": hashlib.sha256(buffer.getvalue()).hexdigest()})
        return cls(spec, models, True, time.perf_counter() - started)


def _read_cached(weights: Path, meta: Path, spec: ReferenceSpec,
                 log: Callable[[str], None]) -> dict[str, np.ndarray] | None:
    """The cached weights of `spec`, or None when absent, of another spec, or damaged."""
    if not (weights.is_file() and meta.is_file()):
        return None
    try:
        described = read_json(meta)
    except (OSError, ValueError):
        described = None
    if not isinstance(described, dict) or \
            {k: v for k, v in described.items() if k != "weights_sha256"} != spec.describe():
        log(f"  reference models: the cache {meta.parent} describes another set; retraining")
        return None
    data = weights.read_bytes()
    if hashlib.sha256(data).hexdigest() != described.get("weights_sha256"):
        log(f"  reference models: the cached weights in {meta.parent} are damaged; retraining")
        return None
    with np.load(io.BytesIO(data), allow_pickle=False) as stored:
        return {name: stored[name] for name in stored.files}


def load_cached(models: list[nn.Module], stored: dict[str, np.ndarray], path: Path) -> None:
    """Load the cached tensors into `models` after checking that they are what those models
    hold: the names ``k/<parameter>`` of each, no other, each of its shape and finite.
    CorruptedFile naming `path` otherwise: its checksum matched (reference.json was written
    for these bytes), so the file is not what fedattack wrote, and nothing is retrained over it
    unasked."""
    expected = {f"{k}/{name}": tensor for k, model in enumerate(models)
                for name, tensor in model.state_dict().items()}
    remedy = f"delete {path.parent} and run the same command again to retrain the reference models"
    missing, extra = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
    if missing or extra:
        what = f"lacks the tensor {missing[0]}" if missing else f"holds a tensor {extra[0]}"
        raise CorruptedFile(path, f"{what} that the {len(models)} reference models do not "
                            f"match ({len(missing)} missing, {len(extra)} unexpected)", remedy)
    for name, tensor in expected.items():
        array = stored[name]
        if array.shape != tuple(tensor.shape):
            raise CorruptedFile(path, f"tensor {name} has shape {list(array.shape)}, the model's "
                                f"is {list(tensor.shape)}", remedy)
        if array.dtype.kind not in "fiub":
            raise CorruptedFile(path, f"tensor {name} is of type {array.dtype}", remedy)
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise CorruptedFile(path, f"tensor {name} holds NaN or infinite values", remedy)
    for k, model in enumerate(models):
        model.load_state_dict({name: torch.from_numpy(stored[f"{k}/{name}"])
                               for name in model.state_dict()})


@torch.no_grad()
def logits_of(models: list[nn.Module], dataset, indices: np.ndarray, device: torch.device,
              batch_size: int = 1024) -> np.ndarray:
    """(M, N, C) float64 logits of M models on the records at `indices`, in eval mode."""
    out = []
    for model in models:
        was = model.training
        model.eval().to(device)
        rows = []
        for start in range(0, len(indices), batch_size):
            x, _ = dataset.batch(np.asarray(indices[start: start + batch_size]))
            rows.append(model(x.to(device)).double().cpu())
        model.train(was)
        out.append(torch.cat(rows).numpy())
    return np.stack(out)


REFERENCE_ATTACKS = ("lira-offline", "lira-online", "rmia-offline", "rmia-online")


def reference_epochs(exp) -> int:
    """Epochs of a reference: `attack.references.epochs`, else the target's (federated:
    rounds * local epochs; fine-tuning: the base epochs plus the fine-tuning epochs)."""
    ref = exp.attack.references if exp.attack is not None else None
    if ref is not None and ref.epochs is not None:
        return ref.epochs
    if exp.scenario == "federated":
        return exp.federation.rounds * exp.federation.local_epochs
    if exp.scenario == "finetune":
        return exp.training.epochs + exp.training.finetune_epochs
    return exp.training.epochs


def population(knowledge) -> np.ndarray:
    """The attacker's population: shadow, known members and known non-members, unlabelled;
    never a target."""
    pool = np.unique(np.concatenate([knowledge.shadow, knowledge.known_members,
                                     knowledge.known_nonmembers]).astype(np.int64))
    if np.isin(pool, knowledge.targets).any():
        raise ValueError("the attacker's population overlaps the targets")
    return pool


def reference_plan(name: str, inp) -> ReferenceSpec:
    """The reference set attack `name` needs: offline on the population, online on the
    population and the targets; seeds and halves drawn from the experiment's seed. `inp` is the
    attack's input (fedattack.attack_input.AttackInput)."""
    cfg, knowledge, dataset = inp.settings.references, inp.knowledge, inp.dataset
    online = name.endswith("-online")
    pool = population(knowledge)
    if online:
        pool = np.union1d(pool, knowledge.targets)
    train_sets = paired_halves(pool, cfg.models, inp.seed + 4099 + online, keep=knowledge.targets)
    if not online:
        assert not any(np.isin(knowledge.targets, s).any() for s in train_sets), \
            "an offline reference model would train on a target"
    seeds = tuple(inp.seed + 5000 + 100 * online + k for k in range(cfg.models))
    return ReferenceSpec(dataset_digest(dataset), inp.target.identity,
                         inp.target.training.model_dump(mode="json"), inp.target.epochs, seeds,
                         tuple(train_sets))


def obtain_references(name: str, inp) -> ReferenceSet:
    """The reference set attack `name` needs (:func:`reference_plan`), from the cache or trained.
    Every offline attack gets the same set (one cache entry), whatever its name."""
    return ReferenceSet.obtain(reference_plan(name, inp), inp.target.build, inp.dataset,
                               inp.target.training, inp.device, inp.reference_cache,
                               inp.settings.references.vectorised, inp.log)


def reference_attack(name: str, inp, target_model: nn.Module) -> tuple[np.ndarray, dict]:
    """Scores of LiRA or RMIA (`name` in REFERENCE_ATTACKS) on the input's targets against
    `target_model`, and what the run should record about the reference models."""
    from fedattack.attacks.lira import lira_offline, lira_online, logit_confidence
    from fedattack.attacks.rmia import rmia_scores, true_class_probability, tune_a

    if name not in REFERENCE_ATTACKS:
        raise ValueError(f"unknown reference attack {name!r}; known: {REFERENCE_ATTACKS}")
    cfg, knowledge, dataset, device = (inp.settings.references, inp.knowledge, inp.dataset,
                                       inp.device)
    refs = obtain_references(name, inp)
    spec = refs.spec
    targets, pool = knowledge.targets, population(knowledge)
    records = np.concatenate([targets, pool])
    labels = dataset.y[records]
    target_logits = logits_of([target_model], dataset, records, device)[0]
    ref_logits = logits_of(refs.models, dataset, records, device)  # (K, N, C)
    inside_ = membership_matrix(records, list(spec.train_sets))  # (N, K)
    n = len(targets)
    extra = {"reference_models": len(refs.models), "reference_records": len(spec.train_sets[0]),
             "reference_epochs": spec.epochs, "reference_cached": not refs.trained,
             "reference_time_s": round(refs.seconds, 2)}
    if name.startswith("lira"):
        t = logit_confidence(target_logits, labels)[:n]
        r = logit_confidence(ref_logits, labels).T[:n]
        if name == "lira-offline":
            scores = lira_offline(t, r, cfg.variance, out_mask=~inside_[:n])
        else:
            scores = lira_online(t, r, inside_[:n], cfg.variance)
        return scores, {**extra, "variance": cfg.variance}
    p = true_class_probability(target_logits, labels)
    r = true_class_probability(ref_logits, labels).T
    z = np.arange(n, len(records))
    if cfg.population is not None and cfg.population < len(z):
        z = np.sort(np.random.default_rng(inp.seed + 6007).choice(z, cfg.population,
                                                                   replace=False))
    if name == "rmia-offline":
        a = cfg.a
        if a is None:
            a, aucs = tune_a(r[n:], inside_[n:], 0, 1, cfg.gamma)
            extra["a_auc"] = {str(k): v for k, v in aucs.items()}
            inp.log(f"  rmia-offline: a = {a}, tuned on the reference models alone: the best of "
                f"a = {min(aucs)}...{max(aucs)} when reference model 0 is attacked as if it were "
                f"the target (AUC {aucs[a]:.3f})")
        scores = rmia_scores(p[:n], r[:n], p[z], r[z], cfg.gamma, a, inside_[:n], inside_[z])
        return scores, {**extra, "a": a, "gamma": cfg.gamma, "population_z": len(z)}
    scores = rmia_scores(p[:n], r[:n], p[z], r[z], cfg.gamma, None)
    return scores, {**extra, "gamma": cfg.gamma, "population_z": len(z)}
