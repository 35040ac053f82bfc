"""Names the server and client sides agree on: run_config keys and fit config/metrics keys."""

CONFIG_PATH = "config-path"  # run_config: the experiment YAML
RUN_DIR = "run-dir"  # run_config: where the ServerApp writes the run directory
CLIENT_THREADS = "client-threads"  # run_config: torch threads per participant
DATA_PATH = "data-path"  # node_config: where a SuperNode finds its dataset files

EXPERIMENT = "experiment"  # fit config: the resolved experiment as JSON
SERVER_ROUND = "server-round"  # fit config
LR = "lr"  # fit config: this round's learning rate
PARTITION_ID = "partition_id"  # fit metrics: who uploaded
CLIENT_CLIPPING = "client-clipping"  # fit config: "fixed" | "adaptive" (client-level DP's mod)


class FederationFailed(RuntimeError):
    """The federated run cannot go on (e.g. a round in which no upload was accepted); the
    message says why, and run.json says ``failed``."""
