"""Flower's SecAgg+ fit workflow, with the two checks the protocol allows the aggregator.

- **A masked vector of the wrong shape is refused** (issue 25, item 4). The shapes of masked
  vectors are not secret (every participant masks the model it was sent, plus SecAgg+'s one-number
  factor in front), so each reply of the collect-masked-vectors stage is checked before Flower
  sums it: tensors readable, of the model's shapes, integers in ``[0, modulus_range)``. A reply
  that fails is dropped as if its node had dropped out at that stage, which SecAgg+ is built for:
  the others' shares of its secret remove its pairwise masks, and the aggregate is the others'
  sum. The refusal is handed to ``on_refused`` (the aggregator lists it in the round's log).
  Flower's own stage would stop the federation with a numpy broadcast traceback naming no node.
- **A round that SecAgg+ halts fails the run** (item 3). Flower logs "Insufficient available
  nodes" and goes on to the next round with the model unchanged, so a federation whose settings
  no round can meet ended ``finished`` untrained; here ``on_halted`` is told which stage halted
  and fails the run in one line.
"""

from __future__ import annotations

from collections.abc import Callable

import flwr.compat.common.recorddict_compat as compat
import numpy as np
from flwr.common import bytes_to_ndarray, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState

STAGES = ("setup", "share-keys", "collect-masked-vectors", "unmask")


def masked_vector_fault(bytes_list, shapes: list[tuple[int, ...]], mod_range: int) -> str | None:
    """Why a participant's masked vector cannot be summed, or None if it can."""
    if not isinstance(bytes_list, list) or len(bytes_list) != len(shapes):
        count = len(bytes_list) if isinstance(bytes_list, list) else type(bytes_list).__name__
        return f"masked vector of {count} tensors, expected {len(shapes)}"
    for i, (raw, shape) in enumerate(zip(bytes_list, shapes, strict=True)):
        try:
            array = bytes_to_ndarray(raw)
        except Exception as err:  # any malformed payload is the participant's fault
            return f"masked tensor {i} unreadable ({type(err).__name__})"
        if array.shape != shape:
            return f"masked tensor {i} has shape {array.shape}, expected {shape}"
        if array.dtype.kind not in "iu":
            return f"masked tensor {i} has dtype {array.dtype}, expected integers"
        if array.size and (array.min() < 0 or array.max() >= mod_range):
            return f"masked tensor {i} outside [0, {mod_range})"
    return None


class _CheckedReplies:
    """The grid, but the masked vectors it receives are checked first (see the module)."""

    def __init__(self, grid, shapes, mod_range: int, refuse: Callable[[int, str], None]):
        self._grid, self._shapes, self._mod_range, self._refuse = grid, shapes, mod_range, refuse

    def __getattr__(self, name):
        return getattr(self._grid, name)

    def send_and_receive(self, messages, *args, **kwargs):
        kept = []
        for msg in self._grid.send_and_receive(messages, *args, **kwargs):
            if not msg.has_error():
                configs = msg.content.config_records.get(RECORD_KEY_CONFIGS)
                raw = configs.get(Key.MASKED_PARAMETERS) if configs is not None else None
                fault = masked_vector_fault(raw, self._shapes, self._mod_range)
                if fault is not None:
                    self._refuse(msg.metadata.src_node_id, fault)
                    continue
            kept.append(msg)
        return kept


class CheckedSecAggPlusWorkflow(SecAggPlusWorkflow):
    """SecAggPlusWorkflow whose masked vectors are checked and whose halts fail the run.

    Args:
        on_refused: ``(round, node id, reason)`` for each masked vector dropped.
        on_halted: ``(round, stage, reason)`` when a stage halts the round.
        kwargs: SecAggPlusWorkflow's.
    """

    def __init__(self, *, on_refused: Callable[[int, str, str], None],
                 on_halted: Callable[[int, str, str], None], **kwargs) -> None:
        super().__init__(**kwargs)
        self.on_refused, self.on_halted = on_refused, on_halted

    def __call__(self, grid, context) -> None:
        """Flower's loop over the four stages, telling ``on_halted`` which one halted."""
        state = WorkflowState()
        steps = (self.setup_stage, self.share_keys_stage, self.collect_masked_vectors_stage,
                 self.unmask_stage)
        for name, step in zip(STAGES, steps, strict=True):
            if not step(grid, context, state):
                server_round = int(context.state.config_records[MAIN_CONFIGS_RECORD][
                    WorkflowKey.CURRENT_ROUND])
                self.on_halted(server_round, name, self.halt_reason(name, state))
                return

    def halt_reason(self, stage: str, state: WorkflowState) -> str:
        sampled = len(getattr(state, "sampled_node_ids", ()) or ())
        if not hasattr(state, "threshold"):
            return ("no participant was sent work" if not sampled else
                    f"{sampled} participant(s) sampled; SecAgg+ needs at least 2")
        return (f"{len(state.active_node_ids)} of {sampled} sampled participant(s) still "
                f"active, too few for its reconstruction threshold of {state.threshold} "
                f"(num_shares {state.num_shares})")

    def collect_masked_vectors_stage(self, grid, context, state) -> bool:
        model = parameters_to_ndarrays(compat.arrayrecord_to_parameters(
            context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True))
        shapes = [(1,)] + [np.shape(a) for a in model]  # SecAgg+'s factor, then the model
        server_round = int(context.state.config_records[MAIN_CONFIGS_RECORD][
            WorkflowKey.CURRENT_ROUND])

        def refuse(node_id: int, reason: str) -> None:
            self.on_refused(server_round, str(node_id), reason)

        checked = _CheckedReplies(grid, shapes, state.mod_range, refuse)
        return super().collect_masked_vectors_stage(checked, context, state)
