"""The offline membership inference stage: an attacker's view in, membership scores out.

The attack side reads only what its threat model grants: the snapshots of one view and the
attacker's knowledge (`splits/knowledge.npz`: labelled known members and non-members, shadow data,
the unlabelled targets). Ground truth (`splits/membership.npz`) is read by :func:`evaluate`
alone, after every score is computed.
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from fedattack import attack_registry as registry
from fedattack import audit, progress, reporting
from fedattack.attack_input import AggregatorView, AttackInput, Observation, TargetModel
from fedattack.attack_registry import AttackOutcome
from fedattack.attacks import ThresholdAttack, WhiteBoxAttack
from fedattack.attacks.network import attack_network_bytes
from fedattack.attacks.references import cache_root, reference_attack, reference_epochs
from fedattack.attacks.threshold import threshold_scores
from fedattack.config import AttackConfig, ConfigError, Experiment
from fedattack.data import (
    Dataset,
    Knowledge,
    load_knowledge,
    load_membership,
    victim_names,
)
from fedattack.experiment import (
    RUN_FILE,
    SNAPSHOT_DIR,
    experiment_dataset,
    initial_model,
    observed_snapshots,
)
from fedattack.features import FeatureCache, FeatureExtractor, FeatureSpec, resolve_layers
from fedattack.io import read_json, write_json
from fedattack.metrics import (
    AttackMetrics,
    Selection,
    TargetHalves,
    attack_metrics,
    check_balanced,
    per_class_accuracy,
    roc_curve,
    selection_figures,
    target_halves,
)
from fedattack.observation import (
    Unobserved,
    observed_rounds,
    observed_text,
    sight_of,
    victim_groups,
)
from fedattack.results import ResultRow, is_inverted, mark_strongest, mean_rows
from fedattack.snapshots import SnapshotStore, View
from fedattack.training import evaluate as evaluate_model
from fedattack.training import resolve_device, set_weights

LOSS_ONLY = FeatureSpec(gradients=(), activations=(), output=False, loss=True, label=False)


def training_record(attack: WhiteBoxAttack) -> dict:
    """How a learnt attack trained, for results.json: its best epoch and the epochs it ran, its
    best validation AUC, the loss threshold's AUC on the same held-out known records, whether it
    fell below that (``undertrained``), and the per-epoch history."""
    return {"best_epoch": attack.best_epoch_, "epochs_trained": len(attack.history_),
            "val_auc": attack.val_auc_, "threshold_loss_val_auc": attack.reference_val_auc_,
            "undertrained": attack.undertrained_, "history": attack.history_}


def load_models(view: View, records, build: Callable[[], torch.nn.Module]) -> list[torch.nn.Module]:
    models = []
    for rec in records:
        model = build()
        set_weights(model, view.read_arrays(rec))
        models.append(model)
    return models


def observe(exp: Experiment, store: SnapshotStore, dataset: Dataset,
            victim: str) -> Observation:
    """The snapshots the experiment's attacker observed of `victim` (see fedattack.observation)."""
    sight = sight_of(exp, victim)
    view = store.view(sight.view)
    build = partial(initial_model, exp, dataset)
    if sight.tags:
        labels, rounds = list(sight.tags), ()
        records = [view.records(kind=sight.kind, tag=tag)[0] for tag in sight.tags]
    else:
        rounds = tuple(observed_rounds(exp, view, sight.kind, sight.partition))
        labels = [f"round-{r}" for r in rounds]
        records = [view.records(kind=sight.kind, round=r, partition=sight.partition)[0]
                   for r in rounds]
    return Observation(sight.attacker, sight.mode, view.name, labels,
                       load_models(view, records, build), observed_text(sight), rounds)


def target_model(exp: Experiment, dataset: Dataset) -> TargetModel:
    """The target's architecture and recipe as the attacker knows them."""
    identity = {**exp.model.identity(), "input_shape": list(dataset.input_shape),
                "classes": exp.output_classes(dataset.num_classes)}
    return TargetModel(lambda seed: initial_model(exp.model_copy(update={"seed": seed}), dataset),
                       identity, exp.training, reference_epochs(exp))


def attack_input(exp: Experiment, run_dir: Path, dataset: Dataset, victim: str,
                 log: Callable[[str], None] = print) -> AttackInput:
    """What the experiment's attacker may read of `victim` in run_dir: the one place that opens
    the run for the attack side (its snapshots through the granted view, its knowledge)."""
    store = SnapshotStore(run_dir / SNAPSHOT_DIR)
    obs = observe(exp, store, dataset, victim)
    partitions = {name: owners for name, owners, _ in victim_groups(exp)}[victim]
    sight = sight_of(exp, victim)
    aggregator = None
    if sight.kind == "upload":  # a global attacker reading each upload
        aggregator = AggregatorView(store.view(sight.view), partial(initial_model, exp, dataset),
                                    tuple(range(exp.federation.num_participants)))
    return AttackInput(victim, tuple(partitions), obs, load_knowledge(run_dir, victim), dataset,
                       target_model(exp, dataset), exp.attack or AttackConfig(), exp.seed,
                       resolve_device(exp.device), run_dir / "features" / victim,
                       cache_root(run_dir), exp.attacker, aggregator, log)


def describe(spec: FeatureSpec) -> str:
    parts = [f"grad[{','.join(map(str, spec.gradients))}]"] if spec.gradients else []
    if spec.activations:
        parts.append(f"act[{len(spec.activations)} layers]")
    parts += [name for name in ("output", "loss", "label") if getattr(spec, name)]
    return "+".join(parts)


def machine_memory_bytes() -> int:
    """Physical memory, or the cgroup's limit when it is lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def _mb(n: float) -> str:
    return f"{n / 2**30:,.1f} GB" if n >= 2**30 else f"{n / 2**20:,.1f} MB"


def check_attack(exp: Experiment, dataset: Dataset) -> None:
    """The attack's layers exist in the model, one record's features fit in attack.memory_mb and
    the attack network fits in this machine's memory; ConfigError naming the key otherwise."""
    cfg = exp.attack
    if cfg is None or not any(registry.get(name).reads_features for name in cfg.attacks):
        return
    model = initial_model(exp, dataset)
    feats = cfg.features
    for key in ("gradients", "activations"):
        try:
            resolve_layers(model, getattr(feats, key))
        except ValueError as err:
            raise ConfigError(f"attack.features.{key}: {err}") from None
    spec = FeatureSpec.from_config(feats)
    try:
        extractor = FeatureExtractor([model] * observed_snapshots(exp), spec,
                                     exp.output_classes(dataset.num_classes), "cpu",
                                     cfg.memory_mb)
    except ValueError as err:
        raise ConfigError(f"attack.features: {err}") from None
    record = extractor.record_bytes() + extractor.working_bytes()
    if record > cfg.memory_mb * 2**20:
        raise ConfigError(f"attack.memory_mb: {cfg.memory_mb:g} MB does not hold the "
                          f"features of one record ({_mb(record)}); raise it")
    need = attack_network_bytes(extractor.shapes(), cfg.kernels, cfg.batch_size)
    have = machine_memory_bytes()
    if need > have:
        paper = attack_network_bytes(extractor.shapes(), 1000, cfg.batch_size)
        raise ConfigError(f"attack.kernels: {cfg.kernels:,} kernels make the attack "
                          f"network need about {_mb(need)}, more than this machine's "
                          f"{_mb(have)}; lower attack.kernels (1000 need {_mb(paper)} here)")


class AttackContext:
    """What an attack's run function receives: its typed input (`AttackInput`, also as the
    attributes below) and the shared machinery over it: feature extraction and caching, the
    attack network, the loss threshold, the reference models."""

    def __init__(self, inp: AttackInput) -> None:
        self.input = inp
        self.obs, self.knowledge, self.dataset = inp.observation, inp.knowledge, inp.dataset
        self.cfg, self.device, self.seed, self.log = inp.settings, inp.device, inp.seed, inp.log
        self.target, self.attacker = inp.target, inp.attacker
        self.spec = FeatureSpec.from_config(self.cfg.features)
        self._victim_extractor: FeatureExtractor | None = None
        self._other_extractor: tuple[tuple, FeatureExtractor] | None = None

    def extractor(self, spec: FeatureSpec, models=None) -> FeatureExtractor:
        """An extractor of `spec` on the victim's observed snapshots (or on `models`, e.g. a
        shadow model). The snapshots are copied and hashed once per victim: every spec derives
        from the one extractor built on them (``with_spec``); the last other `models` are kept
        the same way, so a shadow model's four feature jobs share one too."""
        models = tuple(models or self.obs.models)
        if models == tuple(self.obs.models):
            if self._victim_extractor is None:
                self._victim_extractor = self._build_extractor(spec, models)
            base = self._victim_extractor
        else:
            if self._other_extractor is None or self._other_extractor[0] != models:
                self._other_extractor = (models, self._build_extractor(spec, models))
            base = self._other_extractor[1]
        return base if base.spec == spec else base.with_spec(spec)

    def _build_extractor(self, spec: FeatureSpec, models) -> FeatureExtractor:
        return FeatureExtractor(models, spec, self.dataset.num_classes, self.device,
                                self.cfg.memory_mb)

    def features(self, name: str, spec: FeatureSpec, indices: np.ndarray,
                 models=None) -> FeatureCache:
        """Features of `indices`, computed once into a memory-mapped cache in the run dir."""
        path = self.input.cache / name
        progress.active().phase("features", None, f"{name}, {len(indices)} records")
        return self.extractor(spec, models).cache(self.dataset, indices, path)

    def classes(self, member_indices: np.ndarray, nonmember_indices: np.ndarray):
        """The class labels of known members and non-members, for class-balanced training
        (None when ``attack.balance_classes`` is off)."""
        if not self.cfg.balance_classes:
            return None
        y = np.asarray(self.dataset.y)
        return y[member_indices], y[nonmember_indices]

    def loss_scores(self, indices: np.ndarray, models=None) -> np.ndarray:
        """The loss threshold's scores (-loss at the last snapshot) of dataset records."""
        summaries = self.extractor(LOSS_ONLY, models).scalar_summaries(self.dataset, indices)
        return threshold_scores(summaries, "loss")

    def supervised(self, name: str, spec: FeatureSpec) -> AttackOutcome:
        k = self.knowledge
        members = self.features(f"{name}-known-members", spec, k.known_members)
        nonmembers = self.features(f"{name}-known-nonmembers", spec, k.known_nonmembers)
        reference = (self.loss_scores(k.known_members), self.loss_scores(k.known_nonmembers))
        attack = self.whitebox_attack(name).fit(
            members, nonmembers, reference=reference,
            classes=self.classes(k.known_members, k.known_nonmembers))
        targets = self.features(f"{name}-targets", spec, k.targets)
        return AttackOutcome(name, describe(spec), attack.decision_function(targets),
                             threshold=0.0, training=training_record(attack))

    def whitebox_attack(self, name: str) -> WhiteBoxAttack:
        c = self.cfg

        def on_epoch(entry: dict) -> None:
            if entry["epoch"] == 1:
                progress.active().phase(f"{name} epoch", c.epochs)
            progress.active().advance(f"val AUC {entry['val_auc']:.3f}" if "val_auc" in entry
                                      else "")
            if entry["epoch"] % 10 == 0 or entry["epoch"] == c.epochs:
                self.log(f"  {name}: epoch {entry['epoch']}/{c.epochs} (at most), validation "
                         f"AUC {entry['val_auc']:.3f}, accuracy {entry['val_accuracy']:.3f}")

        return WhiteBoxAttack(epochs=c.epochs, lr=c.lr, batch_size=c.batch_size,
                              kernels=c.kernels, patience=c.patience, device=self.device,
                              seed=self.seed, validation_fraction=c.validation_fraction,
                              on_epoch=on_epoch, init=c.init, standardise=c.standardise)

    def threshold(self, kind: str) -> AttackOutcome:
        ex, k = self.extractor(self.spec), self.knowledge
        attack = ThresholdAttack(kind).fit(ex.scalar_summaries(self.dataset, k.known_members),
                                           ex.scalar_summaries(self.dataset, k.known_nonmembers))
        summaries = ex.scalar_summaries(self.dataset, k.targets)
        return AttackOutcome(f"threshold-{kind}", kind, attack.predict_proba(summaries),
                             predictions=attack.predict(summaries))

    def reference(self, name: str) -> AttackOutcome:
        """LiRA or RMIA (`name`): the last snapshot against reference models."""
        scores, extra = reference_attack(name, self.input, self.obs.models[-1])
        # no labelled record to place a threshold on: decide at the median score (the targets
        # are balanced), as the federated attacks do; the ROC figures do not depend on it
        return AttackOutcome(name, "reference-calibrated", scores,
                             threshold=float(np.median(scores)), extra=extra)

    describe = staticmethod(describe)
    training_record = staticmethod(training_record)

    def run(self, name: str) -> AttackOutcome:
        """Attack `name`, as registered (fedattack.attack_registry), on this observation."""
        return registry.get(name).run(self)


def target_labels(run_dir: Path, knowledge: Knowledge) -> np.ndarray:
    """The targets' membership (1 member, 0 non-member), checked balanced: the only reading of
    membership.npz, for the evaluation, after every score is computed."""
    truth = load_membership(run_dir).victim(knowledge.victim)
    labels = np.isin(knowledge.targets, truth.target_members).astype(int)
    check_balanced(labels)
    return labels


@dataclass(frozen=True)
class Evaluation:
    """One attack's figures on a victim's targets: on all of them, and on the two halves the
    strongest attack is chosen on (`selection`) and reported from (`held_out`)."""

    figures: AttackMetrics
    selection: Selection
    held_out: AttackMetrics
    curve: dict  # the ROC and its figures, for the ROC figure


def evaluate(labels: np.ndarray, halves: TargetHalves, outcome: AttackOutcome,
             seed: tuple[int, ...]) -> Evaluation:
    """Metrics of one attack against the ground truth `labels`. Their bootstrap intervals are
    drawn from `seed` (the experiment's and the victim's), so every attack on a victim sees the
    same resamples and each victim its own; the report half's from a stream of its own."""
    scores = np.asarray(outcome.scores, np.float64)
    figures = attack_metrics(labels, scores, threshold=outcome.threshold,
                             predictions=outcome.predictions, seed=seed)
    report = halves.report
    predictions = None if outcome.predictions is None else np.asarray(outcome.predictions)[report]
    held_out = attack_metrics(labels[report], scores[report], threshold=outcome.threshold,
                              predictions=predictions, seed=(*seed, HELD_OUT_STREAM))
    selection = selection_figures(labels[halves.select], scores[halves.select])
    fpr, tpr, _ = roc_curve(labels, scores)
    curve = {"fpr": fpr, "tpr": tpr, "auc": figures.auc, "auc_ci": figures.auc_ci,
             "min_resolvable_fpr": figures.min_resolvable_fpr}
    return Evaluation(figures, selection, held_out, curve)


def evaluate_in_run(run_dir: Path, knowledge: Knowledge, outcome: AttackOutcome,
                    seed: tuple[int, ...]) -> Evaluation:
    """:func:`evaluate` against the run's ground truth for `knowledge`'s victim, on the target
    halves `seed` draws: what the attack stage does for each attack, for one outcome."""
    labels = target_labels(run_dir, knowledge)
    return evaluate(labels, target_halves(labels, seed), outcome, seed)


def attacked_model_accuracy(run_dir: Path, knowledge: Knowledge, obs: Observation,
                            dataset: Dataset, device) -> dict:
    """Accuracy of the last model the attack read (the victim's own upload for a global
    attacker, the isolated victim's model under isolation, the global model for a local one) on
    the member and the non-member targets: the figures of the model actually attacked, evaluated,
    not a running average over the last local epoch nor the others' aggregate."""
    labels = target_labels(run_dir, knowledge)
    members, nonmembers = knowledge.targets[labels == 1], knowledge.targets[labels == 0]
    model = obs.models[-1].to(device)
    return {"target_train_accuracy": evaluate_model(model, dataset, members, device)["accuracy"],
            "target_test_accuracy": evaluate_model(model, dataset, nonmembers, device)["accuracy"]}


@dataclass
class VictimReport:
    """What the attacks on one victim produced, for the figures."""

    victim: str
    snapshots: list[str]  # labels of the observed snapshots, in time order
    curves: dict[str, dict]
    labels: np.ndarray  # ground-truth membership of the targets (evaluation only)
    classes: np.ndarray  # class label of each target record
    summaries: dict[str, np.ndarray]  # per-target loss, confidence, entropy, gradient norm


@dataclass
class AttackReport:
    """Everything one experiment's attack stage produced: flat results and per-victim data."""

    results: list[ResultRow]
    victims: list[VictimReport]


HELD_OUT_STREAM = 1  # the report half's bootstrap: a stream apart from all the targets'


def isolated_accuracy(run_record: dict, victim: str) -> dict:
    """`isolated_test_accuracy`: for a victim an isolating attacker isolated, the test accuracy of
    its own last model (run.json's ``isolated`` keeps it per round)."""
    isolated = run_record.get("isolated", {})
    partition = victim.removeprefix("participant-")
    if partition not in isolated:
        return {}
    return {"isolated_test_accuracy": isolated[partition][-1]["test_accuracy"]}


def attack_victim(exp: Experiment, run_dir: Path, dataset: Dataset, victim: str,
                  log: Callable[[str], None]) -> tuple[list[ResultRow], VictimReport]:
    """Run the experiment's attacks against one victim and evaluate them."""
    cfg = exp.attack or AttackConfig()
    runner = AttackContext(attack_input(exp, run_dir, dataset, victim, log))
    obs, knowledge = runner.obs, runner.knowledge
    run_record = read_json(run_dir / RUN_FILE)
    results, curves, labels = [], {}, None
    read_model = attacked_model_accuracy(run_dir, knowledge, obs, dataset, runner.device)
    seed = (exp.seed, zlib.crc32(victim.encode()))
    for name in cfg.attacks:
        log(f"{exp.name}: {name} attack on {victim} from {len(obs.models)} snapshot(s) of "
            f"view {obs.view!r}")
        started = time.perf_counter()
        outcome = runner.run(name)
        labels = target_labels(run_dir, knowledge)  # read after the scores
        halves = target_halves(labels, seed)
        done = evaluate(labels, halves, outcome, seed)
        curves[name] = {**done.curve, "scores": outcome.scores,
                        "predictions": outcome.predictions, "threshold": outcome.threshold,
                        "extra": outcome.extra or {}, "training": outcome.training}
        results.append(ResultRow(
            experiment=exp.name, scenario=exp.scenario, attacker=obs.attacker, mode=obs.mode,
            knowledge=registry.get(name).knowledge, attack=name, features=outcome.features,
            victim=victim, snapshots=",".join(obs.labels), observed=obs.observed,
            figures=done.figures, selection=done.selection, held_out=done.held_out,
            inverted=is_inverted(done.figures),
            **read_model,
            **global_accuracy(exp, run_record),
            **isolated_accuracy(run_record, victim),
            **victim_refusals(run_record, victim_partitions(exp, victim)),
            epsilon=run_record.get("epsilon"),  # DP-SGD of the honest participants, if any
            **audit.audit_fields(exp, labels, outcome.scores, halves),  # under DP
            attack_time_s=round(time.perf_counter() - started, 2),
            **(outcome.training or {}),
        ))
    summaries = runner.extractor(runner.spec).scalar_summaries(dataset, knowledge.targets)
    return results, VictimReport(victim, obs.labels, curves, labels, dataset.y[knowledge.targets],
                                 summaries)


def victim_refusals(run_record: dict, partitions: tuple[int, ...]) -> dict:
    """`refusals`: run.json's ``attacked_refusals`` that touched the victim's `partitions` (an
    upload of theirs refused, or another's that claimed one of them), one line each; {} when
    there were none."""
    lines = tuple(f"round {r['round']}: node {r['node']}: {r['reason']}"
                  for r in run_record.get("attacked_refusals", [])
                  if {r.get("partition"), r.get("bound")} & set(partitions))
    return {"refusals": lines} if lines else {}


def victim_partitions(exp: Experiment, victim: str) -> tuple[int, ...]:
    """The partitions `victim` is made of (and those its negatives come from)."""
    for name, owners, against in victim_groups(exp):
        if name == victim:
            return (*owners, *against)
    return ()


def global_accuracy(exp: Experiment, run_record: dict) -> dict:
    """`global_test_accuracy`: the final global model's test accuracy, for a federated run."""
    if exp.scenario != "federated":
        return {}
    value = run_record.get("global_test_accuracy", run_record["history"][-1]["test_accuracy"])
    return {"global_test_accuracy": value}


def run_attacks(exp: Experiment, run_dir: str | Path, log: Callable[[str], None] = print,
                dataset: Dataset | None = None) -> AttackReport:
    """Run the experiment's attacks against each of its victims and evaluate them (on the
    experiment's dataset, loaded here unless the prepared run's is given)."""
    run_dir = Path(run_dir)
    dataset = experiment_dataset(exp) if dataset is None else dataset
    victims = victim_names(run_dir)
    results, reports, observed = [], [], []
    for victim in victims:
        try:
            rows, report = attack_victim(exp, run_dir, dataset, victim, log)
        except Unobserved as err:  # client sampling left this victim out of every round seen
            log(f"{exp.name}: {victim} not attacked: {err}")
            continue
        results += rows
        reports.append(report)
        observed.append(victim)
    if not observed:
        raise Unobserved(f"{exp.name}: no victim was observed in the recorded rounds; record "
                         "more rounds (federation.record_rounds) or sample more clients")
    global_attacker = exp.attacker is not None and exp.attacker.kind == "global"
    if global_attacker and len(observed) > 1:  # fine-tuning's victims ask different questions
        results += mean_rows(results)
    return AttackReport(audit.mark_strongest(mark_strongest(results)), reports)


def write_report(run_dir: str | Path, exp: Experiment, report: AttackReport) -> None:
    """results.json, results.md and the figures of one experiment's attacks."""
    run_dir = Path(run_dir)
    for victim in report.victims:
        write_victim_figures(run_dir, exp, victim, single=len(report.victims) == 1)
    reporting.write_results(run_dir, report.results)


def write_victim_figures(run_dir: Path, exp: Experiment, report: VictimReport,
                         single: bool) -> None:
    """ROC, gradient norms, embedding, per-class accuracy and scores of one victim's attacks;
    under figures/ and attacks/, or figures/<victim>/ and attacks/<victim>/ when there are
    several victims."""
    figures = run_dir / reporting.FIGURES / ("" if single else report.victim)
    attacks = run_dir / "attacks" / ("" if single else report.victim)
    figures.mkdir(parents=True, exist_ok=True)
    attacks.mkdir(parents=True, exist_ok=True)
    title = f"{exp.name} ({exp.scenario})" + ("" if single else f", {report.victim}")
    reporting.plot_roc(report.curves, figures / "roc.png", title)
    last = {k: v[:, -1] for k, v in report.summaries.items()}
    if "grad_norm" in last and len(report.snapshots) > 1:
        mode = exp.attacker.mode if exp.attacker else "passive"
        reporting.plot_norms_over_rounds(report.snapshots, report.summaries["grad_norm"],
                                         report.labels, figures / "gradient_norms_over_rounds.png",
                                         f"{exp.name}, {report.victim} ({mode})")
    if "grad_norm" in last:
        reporting.plot_member_histograms(last["grad_norm"], report.labels,
                                         figures / "gradient_norms.png",
                                         "gradient norm of the observed layers",
                                         f"{title}: last snapshot", log_x=True)
    if "unsupervised" in report.curves:
        reporting.plot_member_histograms(report.curves["unsupervised"]["extra"]["embedding"],
                                         report.labels, figures / "unsupervised_embedding.png",
                                         "encoder output", f"{title}: unsupervised embedding")
    for name, curve in report.curves.items():
        if curve.get("training"):
            reporting.plot_training(curve["training"], figures / f"training-{name}.png",
                                    f"{title}: {name} attack training")
        predictions = curve["predictions"]
        if predictions is None:
            predictions = (curve["scores"] >= curve["threshold"]).astype(int)
        per_class = per_class_accuracy(report.labels, predictions, report.classes)
        write_json(attacks / f"{name}-per-class.json",
                   {str(k): v for k, v in per_class.items()})
        if name == "whitebox":
            classes, counts = np.unique(report.classes, return_counts=True)
            reporting.plot_per_class(per_class, figures / "per_class_accuracy.png",
                                     f"{title}: white-box attack accuracy per class",
                                     dict(zip(classes.tolist(), counts.tolist(), strict=True)))
        np.save(attacks / f"{name}-scores.npy", curve["scores"])
