"""`fedattack deploy-local`: the deployment topology of docker/compose.yaml as local processes.

A SuperLink, a SuperExec running the ServerApp, and per participant a SuperNode with its own
SuperExec running the ClientApp, all on 127.0.0.1 and talking HTTPS with certificates made by
docker/generate-certs.sh; each SuperExec authenticates to the server it runs apps for with a
secret of their own. What stays open (the Control API answers without credentials) is in
docs/deployment-security.md. The experiment is submitted with ``flwr run`` (the app is built from
the project's source, as a user would submit it), its status is read with ``flwr ls`` (``flwr
run`` exits 0 even when the run fails), and the offline attack then runs on the run directory the
ServerApp wrote. Every process is started in a session of its own and stopped by its id, with
the task processes its SuperExec spawned, however the run ends.

The directory given with ``--out`` is the run directory itself, as with ``fedattack run``;
certificates, SuperNode keys and process logs go to its ``deploy/`` folder, Flower's state to
``.flwr/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedattack import protocol
from fedattack.config import ConfigError, Experiment
from fedattack.experiment import CONFIG_FILE, RUN_FILE, claim_run_dir
from fedattack.interruption import marks_interrupted
from fedattack.io import read_json
from fedattack.protocol import FederationFailed
from fedattack.runner import attack_target, discard_unfinished, finished_record
from fedattack.simulation import flower_settings

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CERT_SCRIPT = PROJECT_ROOT / "docker" / "generate-certs.sh"
CONNECTION = "fedattack-local"  # the SuperLink connection written to FLWR_HOME/config.toml
HOST = "127.0.0.1"
STOP_GRACE_S = 15.0  # SuperNodes take a few seconds to shut down on SIGTERM
COMMAND_TIMEOUT_S = 120.0
POLL_S = 1.0
STATUS_POLL_S = 5.0  # between `flwr ls` calls: each starts the Flower CLI, seconds of CPU


class DeployError(RuntimeError):
    """The deployment could not run the experiment; the message is one line for the user."""


class AppMismatch(DeployError):
    """The command runs inside a fedattack checkout other than the installed one."""


def _is_fedattack_project(pyproject: Path) -> bool:
    import tomllib  # here, not above: ruff files it as stdlib only once requires-python >= 3.11

    try:
        with pyproject.open("rb") as f:
            return tomllib.load(f).get("project", {}).get("name") == "fedattack"
    except (OSError, ValueError, AttributeError):  # unreadable, not UTF-8, not TOML
        return False


def app_root(cwd: Path | None = None) -> Path:
    """The project `flwr run` submits: the installed fedattack's (whose code the SuperNodes and
    SuperExecs import). Run inside another fedattack checkout, a user who edited that clone would
    get the installed copy's code, so that is refused, naming both folders."""
    here = (cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if _is_fedattack_project(folder / "pyproject.toml"):
            if folder != PROJECT_ROOT:
                raise AppMismatch(
                    f"this checkout ({folder}) is not the installed fedattack ({PROJECT_ROOT}), "
                    f"whose code the deployment would run: install this one "
                    f"(pip install -e {folder}) or run from {PROJECT_ROOT}")
            return folder
    return PROJECT_ROOT


@dataclass(frozen=True)
class DeployPaths:
    """Where a deployment keeps its files, inside the run directory."""

    run_dir: Path

    @property
    def flwr_home(self) -> Path:
        return self.run_dir / ".flwr"

    @property
    def certs(self) -> Path:
        return self.run_dir / "deploy" / "certs"

    @property
    def logs(self) -> Path:
        return self.run_dir / "deploy" / "logs"

    def node_key(self, node: int) -> Path:
        """Private key of SuperNode `node` (1-based, as generate-certs.sh names them)."""
        return self.certs / "keys" / f"supernode-{node}"

    def superexec_secret(self, server: str) -> Path:
        """The secret `server` (the SuperLink, or a SuperNode by its process name) shares with
        the SuperExec that runs its apps."""
        return self.certs / "superexec" / f"{server}.secret"


def write_secret(path: Path) -> Path:
    """32 random bytes in a new file only its owner may read (the file must not exist)."""
    import secrets

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secrets.token_bytes(32))
    return path


def flower_env(paths: DeployPaths) -> dict[str, str]:
    """The environment of every Flower process: ``simulation.flower_settings`` (state in the run,
    no update check, no runtime dependency installation) and this interpreter's scripts first on
    PATH (SuperExec starts
    ``flwr-serverapp`` and ``flwr-clientapp`` by name)."""
    env = {**os.environ, **flower_settings(paths.flwr_home)}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def free_ports(count: int) -> list[int]:
    """Ports on the loopback interface nobody listens on (held open together, so distinct)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def generate_certificates(certs: Path, nodes: int) -> None:
    """CA, server certificate for 127.0.0.1 and `nodes` SuperNode key pairs, fresh each run."""
    shutil.rmtree(certs, ignore_errors=True)
    if not CERT_SCRIPT.exists():
        raise DeployError(f"{CERT_SCRIPT} not found: deploy-local needs the project's source tree")
    done = subprocess.run(["bash", str(CERT_SCRIPT), "-o", str(certs), "-n", str(nodes)],
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    if done.returncode != 0:
        raise DeployError(f"generating certificates failed: {done.stderr.strip()}")


def write_connection(paths: DeployPaths, port: int) -> None:
    """The SuperLink connection `flwr run` and `flwr ls` use, in FLWR_HOME/config.toml."""
    paths.flwr_home.mkdir(parents=True, exist_ok=True)
    (paths.flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n'
        f"[superlink.{CONNECTION}]\n"
        f'address = "{HOST}:{port}"\n'
        f"root-certificates = {json.dumps(str(paths.certs / 'ca.crt'))}\n"
    )


class ProcessGroup:
    """Processes started in sessions of their own, each logging to a file.

    Stopping signals each process's session by the process's id, so the task processes a
    SuperExec spawned (``flwr-serverapp``, ``flwr-clientapp``) go with it.
    """

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.procs: dict[str, subprocess.Popen] = {}

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        self.logs.mkdir(parents=True, exist_ok=True)
        with self.log_path(name).open("ab") as log:
            proc = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs[name] = proc
        return proc

    def wait_exit(self, name: str, timeout_s: float) -> int:
        """Wait for process `name` to exit on its own and forget it; return its exit code."""
        code = self.procs[name].wait(timeout=timeout_s)
        del self.procs[name]
        return code

    def check_alive(self) -> None:
        """Raise if any process has exited: a deployment's processes serve until stopped."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise DeployError(f"{name} exited with code {proc.returncode}; "
                                  f"see {self.log_path(name)}")

    def stop(self, *names: str) -> None:
        """Stop the named processes (and their sessions)."""
        _stop([self.procs.pop(name) for name in names])

    def stop_all(self) -> None:
        _stop(list(self.procs.values()))
        self.procs.clear()


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM every process's session, wait for all, SIGKILL what is left of each session."""
    for proc in reversed(procs):
        _signal_session(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        _signal_session(proc.pid, signal.SIGKILL)  # stragglers of the session, if any
        with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILLed: reap it if we can
            proc.wait(timeout=STOP_GRACE_S)


def _signal_session(pid: int, sig: signal.Signals) -> None:
    """Signal the session (process group) whose leader is `pid`, if it still exists."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str,
             procs: ProcessGroup, every_s: float = POLL_S) -> None:
    """Poll `condition` until true; fail on timeout or when a deployment process dies."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        procs.check_alive()
        if time.monotonic() > deadline:
            raise DeployError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(every_s)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((HOST, port)) == 0


def flwr(args: list[str], env: dict[str, str], cwd: Path) -> dict:
    """Run a `flwr` CLI command with JSON output and return the parsed JSON, or fail."""
    cmd = [str(Path(sys.executable).parent / "flwr"), *args, "--format", "json"]
    try:
        done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise DeployError(f"`flwr {args[0]}` did not answer in {COMMAND_TIMEOUT_S:.0f}s") from None
    try:
        answer = json.loads(done.stdout)
    except json.JSONDecodeError:
        answer = {}
    if done.returncode != 0 or not answer.get("success"):
        detail = answer.get("error-message") or done.stderr or done.stdout
        raise DeployError(f"`flwr {args[0]}` failed: {' '.join(detail.split())[-300:]}")
    return answer


class LocalDeployment:
    """SuperLink, SuperExecs and SuperNodes on 127.0.0.1 with TLS; a context manager.

    Entering starts the SuperLink and the ServerApp's SuperExec; SuperNodes are added with
    :meth:`start_supernode`. With ``auth``, the SuperLink admits only SuperNodes whose public
    key was registered with :meth:`register` (``flwr supernode register``).
    """

    def __init__(self, paths: DeployPaths, nodes: int, auth: bool = False,
                 timeout_s: float = 3600.0, app: Path = PROJECT_ROOT,
                 on_round: Callable[[int, dict], None] | None = None) -> None:
        self.paths = DeployPaths(paths.run_dir.resolve())  # processes and flwr see one cwd each
        self.nodes, self.auth, self.timeout_s = nodes, auth, timeout_s
        self.app, self.on_round, self.rounds_seen = app, on_round, 0
        self.env = flower_env(self.paths)
        self.procs = ProcessGroup(self.env, self.paths.logs)

    def __enter__(self) -> LocalDeployment:
        generate_certificates(self.paths.certs, self.nodes)
        (self.link_port,) = free_ports(1)
        write_connection(self.paths, self.link_port)
        try:
            self._start_superlink()
            self.procs.start("superexec-serverapp", self._superexec(self.link_port, "superlink"))
        except BaseException:
            self.procs.stop_all()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.procs.stop_all()

    def _tls_server_args(self) -> list[str]:
        certs = self.paths.certs
        return ["--ssl-ca-certfile", str(certs / "ca.crt"),
                "--ssl-certfile", str(certs / "server.pem"),
                "--ssl-keyfile", str(certs / "server.key")]

    def _root_cert_args(self) -> list[str]:
        return ["--root-certificates", str(self.paths.certs / "ca.crt")]

    def _secret_args(self, server: str) -> list[str]:
        """SuperExec authentication (flwr 1.42, experimental): the Runtime API of `server`
        answers only a SuperExec that signs its requests with their shared secret, so no other
        local process can claim the run's ServerApp or ClientApp task (and with it every
        participant's upload). The Control API has no such check: see
        docs/deployment-security.md."""
        secret = self.paths.superexec_secret(server)
        if not secret.exists():
            write_secret(secret)
        return ["--superexec-auth-secret-file", str(secret)]

    def _superexec(self, runtime_port: int, server: str) -> list[str]:
        return ["flower-superexec", "--runtime-api-address", f"{HOST}:{runtime_port}",
                *self._root_cert_args(), *self._secret_args(server)]

    def _start_superlink(self) -> None:
        args = ["flower-superlink", *self._tls_server_args(), "--isolation", "process",
                "--host", HOST, "--port", str(self.link_port),
                "--disable-runtime-dependency-installation", *self._secret_args("superlink")]
        if self.auth:
            args.append("--enable-supernode-auth")
        self.procs.start("superlink", args)
        wait_for(lambda: port_open(self.link_port), 120, "the SuperLink to listen", self.procs)

    def register(self, node: int) -> None:
        """Register SuperNode `node`'s public key with the SuperLink."""
        public_key = self.paths.node_key(node).with_suffix(".pub")
        flwr(["supernode", "register", str(public_key), CONNECTION], self.env, self.paths.run_dir)

    def start_supernode(self, partition_id: int, key: Path | None = None,
                        name: str | None = None) -> str:
        """Start a SuperNode for `partition_id` and the SuperExec running its ClientApp.

        With authentication it signs in with `key` (default: its own key pair from
        generate-certs.sh). Returns the SuperNode's process name (its log is ``<name>.log``).
        """
        name = name or f"supernode-{partition_id + 1}"
        port = free_ports(1)[0]
        args = ["flower-supernode", "--superlink", f"{HOST}:{self.link_port}",
                *self._root_cert_args(), "--isolation", "process", "--host", HOST,
                "--port", str(port), *self._tls_server_args(),
                "--node-config", f"partition-id={partition_id} num-partitions={self.nodes}",
                *self._secret_args(name)]
        if self.auth:
            args += ["--auth-supernode-private-key",
                     str(key or self.paths.node_key(partition_id + 1))]
        self.procs.start(name, args)
        self.procs.start(f"superexec-{name}", self._superexec(port, name))
        return name

    def submit(self, run_config: dict[str, str]) -> int:
        """`flwr run` the project's app with `run_config` overrides; return the run id."""
        overrides = " ".join(f"{key}={json.dumps(value)}" for key, value in run_config.items())
        answer = flwr(["run", str(self.app), CONNECTION, "--run-config", overrides],
                      self.env, self.paths.run_dir)
        return int(answer["run-id"])

    def run_status(self, run_id: int) -> str:
        """The run's status as `flwr ls` reports it, e.g. "running" or "finished:completed"."""
        answer = flwr(["ls", CONNECTION, "--run-id", str(run_id)], self.env, self.paths.run_dir)
        return str(answer["runs"][0]["status"])

    def wait_finished(self, run_id: int) -> None:
        """Wait until the run finishes; fail unless it completed."""
        status = ""

        def finished() -> bool:
            nonlocal status
            self.follow_rounds()
            status = self.run_status(run_id)
            return status.startswith("finished")

        wait_for(finished, self.timeout_s, f"run {run_id} to finish", self.procs, STATUS_POLL_S)
        if status != "finished:completed":
            raise DeployError(f"run {run_id} ended as {status}; see the logs in {self.paths.logs}")

    def follow_rounds(self) -> None:
        """Report each round the ServerApp has logged in run.json since the last call."""
        if self.on_round is None:
            return
        try:
            history = read_json(self.paths.run_dir / RUN_FILE).get("history", [])
        except (OSError, ValueError):  # not written yet, or being replaced
            return
        for entry in history:
            if isinstance(entry, dict) and entry.get("round", 0) > self.rounds_seen:
                self.rounds_seen = entry["round"]
                self.on_round(self.rounds_seen, entry)

    def run_experiment(self, exp: Experiment) -> dict:
        """Start every participant's SuperNode, run `exp` and return run.json's content."""
        run_dir = claim_run_dir(exp, self.paths.run_dir)
        for partition_id in range(exp.federation.num_participants):
            if self.auth:
                self.register(partition_id + 1)
            self.start_supernode(partition_id)
        self.wait_finished(self.submit({protocol.CONFIG_PATH: str(run_dir / CONFIG_FILE),
                                        protocol.RUN_DIR: str(run_dir)}))
        record = read_json(run_dir / RUN_FILE) if (run_dir / RUN_FILE).exists() else {}
        if record.get("status") == "failed":  # e.g. a round in which no upload was accepted
            raise FederationFailed(f"{record.get('error')} (see {run_dir / RUN_FILE})")
        if record.get("status") != "finished":
            raise DeployError(f"run of {exp.name} completed but {run_dir / RUN_FILE} "
                              "does not say finished")
        return record


def check_deployable(exp: Experiment) -> Path:
    """The app folder to submit, after refusing what deploy-local cannot run; raises before
    anything is written, so a refused command leaves no run directory behind."""
    if exp.scenario != "federated":
        raise ConfigError(f"deploy-local runs federated experiments; {exp.name} is {exp.scenario}")
    return app_root()


def deploy_experiment(exp: Experiment, run_dir: str | Path, auth: bool = False,
                      timeout_s: float = 3600.0,
                      on_round: Callable[[int, dict], None] | None = None,
                      ) -> tuple[dict, list[dict]]:
    """Train `exp` through a local deployment into `run_dir`, then attack it offline.

    Like :func:`fedattack.runner.run_experiment`: a finished training is reused, an
    unfinished one is redone from round 0, and the attack runs when `exp.attack` is set.
    """
    app = check_deployable(exp)
    run_dir = claim_run_dir(exp, run_dir).resolve()
    record = finished_record(run_dir)
    if record is None:
        discard_unfinished(run_dir)
        paths = DeployPaths(run_dir)
        with marks_interrupted(run_dir, exp.name), LocalDeployment(
                paths, exp.federation.num_participants, auth, timeout_s, app, on_round) as dep:
            record = dep.run_experiment(exp)
    results = attack_target(exp, run_dir) if exp.attack is not None else []
    return record, results
