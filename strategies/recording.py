"""The recording aggregator: any Flower strategy, wrapped so that it records what the aggregator
observes (the global attacker's view), as Flower's DP strategies wrap an inner one.

`RecordingStrategy` is the experiment's composition of the wrappers of strategies/wrapper.py,
outermost first: the upload gate (strategies/gate.py: checks and binds, hands on the accepted
uploads in partition order), the recorder (strategies/recorder.py: writes the "global" view),
a malicious wrapper where the aggregator is the attacker (strategies/malicious.py), the model
check (strategies/gate.py), client-level DP's uniform weights (strategies/client_dp.py) and the
inner strategy. Each wrapper works alone around any Flower strategy; this class keeps the
constructor the server app and the tests use, and reads every wrapper's state as its own
(``strategy.store`` is the recorder's, ``strategy.own_model`` the malice's).

The names the upload checks had here (check_upload, check_metrics, RejectedUpload, RoundLog...)
are still importable from this module.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.common import Scalar
from flwr.server.strategy import Strategy

from fedattack.snapshots import SnapshotStore
from strategies.client_dp import UniformWeights
from strategies.gate import (  # noqa: F401  (the names this module always offered)
    UPLOAD_METRICS,
    ModelCheck,
    UploadGate,
    as_dtype,
    check_metrics,
    check_num_examples,
    check_upload,
    is_integer,
    is_number,
    one_line,
    read_upload,
)
from strategies.inner import inner_strategy
from strategies.recorder import VIEW, Recorder  # noqa: F401
from strategies.wrapper import RejectedUpload, RoundLog, RunState  # noqa: F401

_as_dtype = as_dtype


class RecordingStrategy(UploadGate):
    """A Flower strategy (``inner``) that records the aggregator's observations around it.

    Every upload is untrusted: one whose partition id, num_examples, fit metrics or tensors do not
    check out, or that claims a partition its node is not bound to, is refused (logged with the
    reason, listed in the round's log) and the round goes on with the others. A round in which no
    upload was accepted, or a full disk, fails the run (``failure``): the remaining rounds send
    nothing and evaluate nothing, and ``on_failure`` is told why. Sampling, the fit config and
    aggregation are the inner strategy's; evaluation is delegated to it too.

    Args:
        store: where observations are written (view "global").
        record_round: which rounds to record.
        weight_names: tensor names of the model, in the order of Flower's parameter list.
        fit_config: ``round -> config`` sent to every participant (learning rate, epochs...),
            when the inner strategy is built here.
        partition_sizes: the number of training records of each partition, by partition id.
        on_round: called after each aggregation with (round, RoundLog).
        on_failure: called once with the exception that failed the run.
        inner: the strategy to wrap; None: `strategies.inner.OrderedFedAvg` built from
            ``fit_config`` and ``kwargs`` (initial_parameters, evaluate_fn, min clients...).
        secure_aggregation: the round is run by SecAgg+: results carry the aggregate, not
            uploads, and no upload is recorded.
        uniform_weights: every accepted upload weighs 1 in the inner strategy's average
            (client-level DP: one participant moves the average by at most clip / sampled).
        noise_seed: seeds numpy's global generator before each aggregation, from which Flower's
            DP wrappers draw their noise (so the same seed gives the same run); None: untouched.
        last_round: the federation's last round (the recorder writes the rounds before it in
            the background; strategies.recorder).
    """

    def __init__(
        self,
        *,
        store: SnapshotStore,
        record_round: Callable[[int], bool],
        weight_names: list[str],
        partition_sizes: list[int],
        fit_config: Callable[[int], dict[str, Scalar]] | None = None,
        on_round=None,
        on_failure: Callable[[Exception], None] | None = None,
        inner: Strategy | None = None,
        secure_aggregation: bool = False,
        uniform_weights: bool = False,
        noise_seed: int | None = None,
        last_round: int | None = None,
        **kwargs,
    ) -> None:
        if inner is None:
            inner = inner_strategy("fedavg", on_fit_config_fn=fit_config, **kwargs)
        elif kwargs or fit_config is not None:
            raise TypeError("with an inner strategy, its options are the inner strategy's")
        self.strategy = inner  # the user's strategy, innermost
        run = RunState(partition_sizes, on_failure)
        core: Strategy = inner
        if uniform_weights or noise_seed is not None:
            core = UniformWeights(core, uniform=uniform_weights, noise_seed=noise_seed)
        core = self.malice(ModelCheck(core), run)
        recorder = Recorder(core, run, store=store, record_round=record_round,
                            weight_names=weight_names, keeps_uploads=not secure_aggregation,
                            last_round=last_round)
        super().__init__(recorder, run, secure_aggregation=secure_aggregation,
                         refuse_zero_updates=uniform_weights, on_round=on_round)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.strategy!r})"

    def malice(self, inner: Strategy, run: RunState) -> Strategy:
        """The malicious wrapper around `inner` (none: the aggregator is honest-but-curious)."""
        return inner
