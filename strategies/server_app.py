"""The Flower ServerApp: builds the aggregator's strategy for one experiment.

`run_config` carries ``config-path`` (the experiment YAML) and ``run-dir`` (where the run's files
go); see fedattack.protocol. The same app serves ``flwr run .`` (keys from pyproject.toml and
--run-config)
and the programmatic simulation (keys passed to :func:`make_server_app` as overrides).

A federation runs Flower's legacy server loop over the strategy (``start_grid``, as
``ServerApp(server_fn=...)`` does), or, under ``federation.secure_aggregation``, Flower's
``DefaultWorkflow`` with the ``SecAggPlusWorkflow`` as its fit workflow (the clients' side is
``secaggplus_mod``, in clients/client_app.py). Client-level DP wraps the inner strategy in
Flower's own DP wrapper (strategies/client_dp.py: server- or client-side, fixed or adaptive
clipping), which the recording (and malicious) aggregator wraps in turn.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from flwr.common import Context, ndarrays_to_parameters
from flwr.server import Grid, LegacyContext, ServerApp, ServerAppComponents, ServerConfig
from flwr.server.compat.app import start_grid
from flwr.server.workflow import DefaultWorkflow

from fedattack import protocol
from fedattack.active import GradientAscent, ascended_records, ascent_for
from fedattack.config import Experiment, load_experiment
from fedattack.data import knowledge_of
from fedattack.experiment import (
    RUN_FILE,
    SNAPSHOT_DIR,
    PreparedRun,
    initial_model,
    prepare_run,
)
from fedattack.io import write_json
from fedattack.observation import aggregator_grants
from fedattack.privacy import client_level_epsilon
from fedattack.protocol import FederationFailed
from fedattack.snapshots import SnapshotStore
from fedattack.training import (
    evaluate,
    get_weights,
    global_model_entry,
    lr_at,
    resolve_device,
    set_weights,
    weight_names,
)
from strategies.client_dp import client_dp
from strategies.inner import inner_strategy
from strategies.malicious import MaliciousAggregator
from strategies.recording import RecordingStrategy, RoundLog
from strategies.sampling import SeededClientManager
from strategies.secure_aggregation import CheckedSecAggPlusWorkflow


class GlobalModelLog:
    """Evaluates the global model after each round and keeps run.json up to date on disk."""

    def __init__(self, exp: Experiment, run_dir: Path, model, dataset, splits,
                 on_round: Callable[[int, dict], None] | None = None) -> None:
        self.exp, self.path, self.model = exp, run_dir / RUN_FILE, model
        self.on_round_done = on_round
        self.dataset, self.splits = dataset, splits
        self.device = resolve_device(exp.device)
        self.started = time.perf_counter()
        self.record = {"experiment": exp.name, "scenario": exp.scenario, "status": "running",
                       "history": [], "rounds": [], "refusals": [], "attacked_refusals": []}
        self.attacked = attacked_partitions(splits)
        self.binding = None  # the aggregator's strategies.binding.PartitionBinding

    def evaluate_fn(self, server_round: int, weights, _config) -> tuple[float, dict]:
        entry = global_model_entry(self.model, weights, self.dataset, self.splits, self.device,
                                   server_round, self.started)
        self.record["history"].append(entry)
        self.record["global_test_accuracy"] = entry["test_accuracy"]  # the latest global model's
        if server_round == self.exp.federation.rounds and self.record["status"] == "running":
            self.record["status"] = "finished"
        self.record["wall_time_s"] = round(time.perf_counter() - self.started, 3)
        write_json(self.path, self.record)
        if self.on_round_done and server_round > 0:
            self.on_round_done(server_round, entry)
        return entry["test_loss"], {"test_accuracy": entry["test_accuracy"]}

    def fail(self, error: Exception) -> None:
        """Mark the run failed in run.json, with why (if the disk lets run.json be written)."""
        self.record["status"] = "failed"
        self.record["error"] = str(error)
        self.record["wall_time_s"] = round(time.perf_counter() - self.started, 3)
        try:
            write_json(self.path, self.record)
        except OSError:  # e.g. the full disk that failed the run: run.json stays "running"
            pass

    def evaluate_isolated(self, server_round: int, partition: int, weights) -> None:
        """Test accuracy of an isolated participant's model (its upload), kept in run.json's
        ``isolated``; the victim's model is what an isolating attacker must keep useful."""
        set_weights(self.model, weights)
        self.model.to(self.device)
        test = evaluate(self.model, self.dataset, self.splits.nonmembers, self.device)
        rounds = self.record.setdefault("isolated", {}).setdefault(str(partition), [])
        rounds.append({"round": server_round, "test_loss": test["loss"],
                       "test_accuracy": test["accuracy"]})

    def on_round(self, server_round: int, round_log: RoundLog) -> None:
        entry = {"round": server_round, "accepted": round_log.accepted,
                 "rejected": round_log.rejected}
        self.record["refusals"].extend({"round": server_round, **r} for r in round_log.rejected)
        # every refusal that touched an attacked participant: its own upload refused, or another
        # node's upload claiming its partition (the attacks' view of it lacks or kept them)
        self.record["attacked_refusals"].extend(
            {"round": server_round, **r} for r in round_log.affecting(self.attacked))
        if self.binding is not None:
            self.record["binding"] = self.binding.as_record()
        if round_log.ascent:  # the active aggregator's steps: target loss, step and update norms
            entry["ascent"] = round_log.ascent
        spent = [m["epsilon"] for m in round_log.metrics.values() if "epsilon" in m]
        if spent:  # DP-SGD: the largest epsilon any participant has spent so far
            entry["epsilon"] = self.record["epsilon"] = max(spent)
        dp = self.exp.federation.client_dp
        if dp is not None:  # client-level DP: the accountant's epsilon after this round
            fed = self.exp.federation
            eps = client_level_epsilon(dp.noise_multiplier, fed.sampled / fed.num_participants,
                                       server_round, dp.delta)
            entry["client_epsilon"] = self.record["client_epsilon"] = eps
            if spent:
                entry["dp_sgd_epsilon"] = self.record["dp_sgd_epsilon"] = max(spent)
            # a client-level guarantee covers each of the participant's records: the tighter
            # of the two bounds every record's membership
            entry["epsilon"] = self.record["epsilon"] = min(eps, max(spent)) if spent else eps
        self.record["rounds"].append(entry)


def attacked_partitions(splits) -> set[int]:
    """The partitions whose records the experiment's victims are (and those of the negatives
    of a victim attacked against other partitions)."""
    if splits is None:
        return set()
    return {int(p) for v in splits.victims for p in (*v.partitions, *v.against)}


def build_strategy(
    exp: Experiment, run_dir: Path, on_round: Callable[[int, dict], None] | None = None,
    on_failure: Callable[[Exception], None] | None = None,
    prepared: PreparedRun | None = None,
) -> RecordingStrategy:
    """The aggregator for this experiment, with its run directory prepared (here, unless the
    simulation that runs it in its own process prepared it); `on_failure` is told why the run
    failed, if it does (run.json says it too, where the disk allows)."""
    if prepared is None or prepared.exp != exp or prepared.run_dir.resolve() != run_dir.resolve():
        prepared = prepare_run(exp, run_dir)
    dataset, splits = prepared.dataset, prepared.splits
    model = initial_model(exp, dataset)
    weights = get_weights(model)
    log = GlobalModelLog(exp, run_dir, model, dataset, splits, on_round)
    exp_json = exp.model_dump_json()
    n = exp.federation.num_participants

    def failed(error: Exception) -> None:
        log.fail(error)
        if on_failure:
            on_failure(error)

    dp = exp.federation.client_dp
    clipping = {} if dp is None or not dp.on_clients else {
        protocol.CLIENT_CLIPPING: "adaptive" if dp.adaptive else "fixed"}

    def fit_config(server_round: int) -> dict:
        return {protocol.SERVER_ROUND: server_round,
                protocol.LR: lr_at(exp.training, server_round - 1),
                protocol.EXPERIMENT: exp_json, **clipping}

    inner = inner_strategy(
        exp.federation.strategy,
        on_fit_config_fn=fit_config,
        initial_parameters=ndarrays_to_parameters(weights),
        evaluate_fn=log.evaluate_fn,
        fraction_fit=exp.federation.sampled / n,
        min_fit_clients=exp.federation.sampled,
        min_available_clients=n,
    )
    strategy = aggregator_class(exp)(
        **attacker_options(exp, dataset, splits, log),
        inner=client_dp(exp, inner),
        secure_aggregation=exp.federation.secure_aggregation is not None,
        uniform_weights=dp is not None,
        noise_seed=exp.seed if dp is not None else None,
        store=SnapshotStore(run_dir / SNAPSHOT_DIR),
        record_round=exp.federation.records,
        last_round=exp.federation.rounds,
        weight_names=weight_names(model),
        partition_sizes=[len(p) for p in splits.partitions],
        on_round=log.on_round,
        on_failure=failed,
    )
    log.binding = strategy.binding
    return strategy


def aggregator_class(exp: Experiment) -> type[RecordingStrategy]:
    """The malicious aggregator when the experiment's attacker is the aggregator."""
    if exp.attacker is not None and exp.attacker.kind == "global":
        return MaliciousAggregator
    return RecordingStrategy


def attacker_options(exp: Experiment, dataset, splits, log: GlobalModelLog | None = None) -> dict:
    """MaliciousAggregator's arguments, from what the threat model grants it
    (fedattack.observation.aggregator_grants): whom it isolates, how it ascends, who evaluates
    the isolated participants' models."""
    grants = aggregator_grants(exp)
    if grants is None:
        return {}
    ascend = None
    if grants.ascends:
        records = ascended_records(knowledge_of(splits, v.name) for v in splits.victims)
        ascend = records_ascent(exp, dataset, records)
    isolated = set(grants.isolated)
    on_isolated = log.evaluate_isolated if (log is not None and isolated) else None
    return {"attacker": grants.attacker, "isolated": isolated, "ascend": ascend,
            "on_isolated": on_isolated}


def records_ascent(exp: Experiment, dataset, records: np.ndarray) -> GradientAscent:
    """Eq. 2 on `records` (the targets and the known records of every victim), with a model of
    the experiment's architecture and the attacker's step (relative or absolute)."""
    x, y = dataset.batch(records)
    return ascent_for(initial_model(exp, dataset), x, y, exp.attacker)


def make_server_app(
    overrides: dict | None = None, on_round: Callable[[int, dict], None] | None = None,
    on_failure: Callable[[Exception], None] | None = None,
    prepared: PreparedRun | None = None,
) -> ServerApp:
    """A ServerApp whose run_config is completed by `overrides` (used by the simulation runner,
    which passes the run it prepared); `on_failure` is told why the run failed, if it does."""

    def components(context: Context) -> tuple[Experiment, ServerAppComponents]:
        run_config = {**context.run_config, **(overrides or {})}
        exp = load_experiment(run_config[protocol.CONFIG_PATH])
        run_dir = Path(str(run_config[protocol.RUN_DIR]))
        strategy = build_strategy(exp, run_dir, on_round, on_failure, prepared)
        return exp, ServerAppComponents(strategy=strategy,
                                        config=ServerConfig(num_rounds=exp.federation.rounds),
                                        client_manager=SeededClientManager(exp.seed))

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        exp, parts = components(context)
        secagg = exp.federation.secure_aggregation
        if secagg is None:  # what ServerApp(server_fn=...) runs
            start_grid(grid=grid, config=parts.config, strategy=parts.strategy,
                       client_manager=parts.client_manager)
            return
        legacy = LegacyContext(context=context, config=parts.config, strategy=parts.strategy,
                               client_manager=parts.client_manager)
        workflow = secure_aggregation_workflow(exp, parts.strategy)
        DefaultWorkflow(fit_workflow=workflow)(grid, legacy)

    return app


def secure_aggregation_workflow(exp: Experiment,
                                strategy: RecordingStrategy) -> CheckedSecAggPlusWorkflow:
    """Flower's SecAgg+ fit workflow for ``federation.secure_aggregation``, with the checks of
    strategies.secure_aggregation: a wrongly shaped masked vector is refused (listed in the
    round's log of `strategy`), a halted round fails the run. Its weights are the participants'
    example counts (under client-level DP, 1 each), at most the largest partition's size
    (`max_weight`: each upload is scaled by its weight over it before quantisation)."""
    cfg = exp.federation.secure_aggregation
    max_weight = 1 if exp.federation.client_dp is not None else max(strategy.partition_sizes)

    def halted(server_round: int, stage: str, reason: str) -> None:
        strategy.fail(FederationFailed(f"round {server_round}: secure aggregation (SecAgg+) "
                                       f"halted in its {stage} stage: {reason}; no model was "
                                       "aggregated"))

    return CheckedSecAggPlusWorkflow(on_refused=strategy.refuse_before_aggregation,
                                     on_halted=halted, num_shares=cfg.num_shares,
                                     reconstruction_threshold=cfg.reconstruction_threshold,
                                     max_weight=max_weight, clipping_range=cfg.clipping_range,
                                     quantization_range=cfg.quantization_range,
                                     modulus_range=cfg.modulus_range)


app = make_server_app()
