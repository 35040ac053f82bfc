#!/usr/bin/env python3
"""Writes the compose file of a fedattack deployment (docker/compose.yaml is its default output).

Services: the SuperLink (the one published port, 8000: Fleet, Control and Runtime APIs over
HTTPS), a SuperExec running the ServerApp (it writes run directories to the `runs` volume), and
per participant i a SuperNode `supernode-<i>` (partition i-1) with a SuperExec
`superexec-clientapp-<i>` running its ClientApp. The ClientApp trains, so the GPU is reserved for
that SuperExec. A SuperNode and its SuperExec talk over the compose network without TLS (the
SuperNode's Runtime API is not published); everything that reaches the SuperLink uses TLS with
the certificates of docker/generate-certs.sh mounted from ./certs.

Usage: python docker/compose.py [--nodes N] [--auth] [--gpus G] > docker/compose.yaml
"""

from __future__ import annotations

import argparse
import sys

import yaml

FLWR_VERSION = "1.42.0"
LINK_PORT = 8000
NODE_RUNTIME_PORT = 9094
CERTS = "./certs:/app/certificates:ro"
TLS_CA = "certificates/ca.crt"
# The two variants of the app image, by where torch comes from: PyPI's default Linux build
# brings CUDA; the CPU build is a fraction of its size.
TORCH_INDEX = {"cuda": "https://pypi.org/simple", "cpu": "https://download.pytorch.org/whl/cpu"}
APP_ENV = {
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}


def superlink(auth: bool) -> dict:
    command = ["--ssl-ca-certfile", TLS_CA, "--ssl-certfile", "certificates/server.pem",
               "--ssl-keyfile", "certificates/server.key", "--isolation", "process",
               "--host", "0.0.0.0", "--port", str(LINK_PORT)]
    if auth:
        command.append("--enable-supernode-auth")
    return {"image": f"flwr/superlink:{FLWR_VERSION}", "command": command,
            "ports": [f"{LINK_PORT}:{LINK_PORT}"], "volumes": [CERTS],
            "environment": {"FLWR_DISABLE_UPDATE_CHECK": "1"}, "restart": "unless-stopped"}


def app_executor(runtime_api: list[str], gpus: int) -> dict:
    """A SuperExec on the fedattack image (the apps and their dependencies installed), its
    CUDA variant where it has GPUs."""
    variant = "cuda" if gpus else "cpu"
    service = {
        "image": f"fedattack-superexec:{variant}",
        "build": {"context": "..", "dockerfile": "docker/Dockerfile",
                  "args": {"TORCH_INDEX_URL": TORCH_INDEX[variant]}},
        "command": runtime_api,
        "environment": dict(APP_ENV),
        "restart": "unless-stopped",
    }
    if gpus:
        service["deploy"] = {"resources": {"reservations": {"devices": [
            {"driver": "nvidia", "count": gpus, "capabilities": ["gpu"]}]}}}
    return service


def serverapp_executor() -> dict:
    service = app_executor(["--runtime-api-address", f"superlink:{LINK_PORT}",
                            "--root-certificates", TLS_CA], gpus=0)
    service["volumes"] = [CERTS, "runs:/app/runs", "../experiments:/app/experiments:ro"]
    service["depends_on"] = ["superlink"]
    return service


def supernode(node: int, nodes: int, auth: bool) -> dict:
    command = ["--superlink", f"${{SUPERLINK_ADDRESS:-superlink:{LINK_PORT}}}",
               "--root-certificates", TLS_CA, "--isolation", "process",
               "--host", "0.0.0.0", "--port", str(NODE_RUNTIME_PORT),
               "--node-config", f"partition-id={node - 1} num-partitions={nodes}"]
    volumes = [CERTS]
    if auth:
        command += ["--auth-supernode-private-key", f"keys/supernode-{node}"]
        volumes.append(f"./certs/keys/supernode-{node}:/app/keys/supernode-{node}:ro")
    return {"image": f"flwr/supernode:{FLWR_VERSION}", "command": command, "volumes": volumes,
            "environment": {"FLWR_DISABLE_UPDATE_CHECK": "1"}, "restart": "unless-stopped"}


def clientapp_executor(node: int, gpus: int) -> dict:
    service = app_executor(["--runtime-api-address", f"supernode-{node}:{NODE_RUNTIME_PORT}",
                            "--insecure"], gpus)
    service["volumes"] = [f"data-{node}:/app/data"]
    service["depends_on"] = [f"supernode-{node}"]
    return service


def compose(nodes: int, auth: bool, gpus: int) -> dict:
    services = {"superlink": superlink(auth), "superexec-serverapp": serverapp_executor()}
    for node in range(1, nodes + 1):
        services[f"supernode-{node}"] = supernode(node, nodes, auth)
        services[f"superexec-clientapp-{node}"] = clientapp_executor(node, gpus)
    volumes = {"runs": {}, **{f"data-{node}": {} for node in range(1, nodes + 1)}}
    return {"services": services, "volumes": volumes}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2, help="SuperNodes (participants)")
    parser.add_argument("--auth", action="store_true", help="SuperNode authentication")
    parser.add_argument("--gpus", type=int, default=1,
                        help="GPUs reserved per ClientApp SuperExec (0: CPU-only image)")
    args = parser.parse_args(argv)
    if args.nodes < 1 or args.gpus < 0:
        parser.error("--nodes must be at least 1 and --gpus at least 0")
    header = (f"# Generated by `python docker/compose.py --nodes {args.nodes}"
              f"{' --auth' if args.auth else ''} --gpus {args.gpus}`; edit that script, "
              "not this file.\n")
    sys.stdout.write(header + yaml.safe_dump(compose(args.nodes, args.auth, args.gpus),
                                             sort_keys=False, width=100))


if __name__ == "__main__":
    main()
