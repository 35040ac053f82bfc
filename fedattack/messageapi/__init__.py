"""Auditing your own Flower app written against the Message API (``ServerApp`` with
``@app.main()``, ``ClientApp`` with ``@app.train()``, ``flwr.serverapp.strategy``): server-side
strategy wrappers (upload gate, recorder, malicious aggregator) and ClientApp mods (partition,
malicious participant) that write the run directory `fedattack attack RUN_DIR` reads.

In the app's server_app.py::

    strategy = audited(FedAvg(...), context, members=[train_indices(p, n) for p in range(n)])

in its client_app.py::

    app = ClientApp(mods=[partition_mod, malicious_participant_mod])

See docs/own-flower-app.md and examples/flower-app/.
"""

from fedattack.messageapi.audit import AUDIT_CONFIG, AUDIT_RUN_DIR, AuditRun
from fedattack.messageapi.client import malicious_participant_mod, partition_mod
from fedattack.messageapi.server import (
    MaliciousAggregator,
    Recorder,
    RejectedUpload,
    StrategyWrapper,
    UploadGate,
    audited,
)

__all__ = [
    "AUDIT_CONFIG",
    "AUDIT_RUN_DIR",
    "AuditRun",
    "MaliciousAggregator",
    "Recorder",
    "RejectedUpload",
    "StrategyWrapper",
    "UploadGate",
    "audited",
    "malicious_participant_mod",
    "partition_mod",
]
