#!/usr/bin/env python3
"""Writes the compose file of a fedattack deployment (docker/compose.yaml is its default output).

Services: the SuperLink (the one published port, 8000: Fleet, Control and Runtime APIs over
HTTPS), a SuperExec running the ServerApp (it writes run directories to the `runs` volume), and
per participant i a SuperNode `supernode-<i>` (partition i-1) with a SuperExec
`superexec-clientapp-<i>` running its ClientApp. The ClientApp trains, so the GPU is reserved for
that SuperExec. A SuperNode and its SuperExec talk over the compose network without TLS (the
SuperNode's Runtime API is not published); everything that reaches the SuperLink uses TLS with
the certificates of docker/generate-certs.sh mounted from ./certs.

The images are Flower's official ones (`--base official`, the default) or, where the image hub
cannot be reached, the local stand-ins docker/build-base.sh builds from Debian packages
(`--base local`). The SuperLink's port is published on the host as $SUPERLINK_PORT (8000 unless
set). `--certs` names the certificates' folder (relative paths from docker/).

Usage: python docker/compose.py [--nodes N] [--auth] [--gpus G] [--base official|local]
           [--certs DIR] > docker/compose.yaml
"""

from __future__ import annotations

import argparse
import sys

import yaml

FLWR_VERSION = "1.42.0"
LINK_PORT = 8000
NODE_RUNTIME_PORT = 9094
CERTS_DIR = "./certs"
TLS_CA = "certificates/ca.crt"
# The two variants of the app image, by where torch comes from: PyPI's default Linux build
# brings CUDA; the CPU build is a fraction of its size.
TORCH_INDEX = {"cuda": "https://pypi.org/simple", "cpu": "https://download.pytorch.org/whl/cpu"}
# The images of each base: Flower's official ones, or docker/build-base.sh's stand-ins.
IMAGES = {
    "official": {"superlink": f"flwr/superlink:{FLWR_VERSION}",
                 "supernode": f"flwr/supernode:{FLWR_VERSION}",
                 "superexec": f"flwr/superexec:{FLWR_VERSION}"},
    "local": {"superlink": f"fedattack-superlink:{FLWR_VERSION}",
              "supernode": f"fedattack-supernode:{FLWR_VERSION}",
              "superexec": f"fedattack-superexec-base:{FLWR_VERSION}"},
}
APP_ENV = {
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}


def certs_mount(certs: str) -> str:
    return f"{certs}:/app/certificates:ro"


def superlink(auth: bool, base: str, certs: str) -> dict:
    command = ["--ssl-ca-certfile", TLS_CA, "--ssl-certfile", "certificates/server.pem",
               "--ssl-keyfile", "certificates/server.key", "--isolation", "process",
               "--host", "0.0.0.0", "--port", str(LINK_PORT)]
    if auth:
        command.append("--enable-supernode-auth")
    return {"image": IMAGES[base]["superlink"], "command": command,
            "ports": [f"${{SUPERLINK_PORT:-{LINK_PORT}}}:{LINK_PORT}"],
            "volumes": [certs_mount(certs)],
            "environment": {"FLWR_DISABLE_UPDATE_CHECK": "1"}, "restart": "unless-stopped"}


def app_executor(runtime_api: list[str], gpus: int, base: str) -> dict:
    """A SuperExec on the fedattack image (the apps and their dependencies installed), its
    CUDA variant where it has GPUs."""
    variant = "cuda" if gpus else "cpu"
    args = {"TORCH_INDEX_URL": TORCH_INDEX[variant]}
    if base != "official":  # docker/Dockerfile's default base is the official SuperExec
        args["BASE_IMAGE"] = IMAGES[base]["superexec"]
        args["TORCH_WHEEL"] = "${TORCH_WHEEL:-}"  # a wheel in docker/wheels/, where there is one
    service = {
        "image": f"fedattack-superexec:{variant}",
        "build": {"context": "..", "dockerfile": "docker/Dockerfile", "args": args},
        "command": runtime_api,
        "environment": dict(APP_ENV),
        "restart": "unless-stopped",
    }
    if gpus:
        service["deploy"] = {"resources": {"reservations": {"devices": [
            {"driver": "nvidia", "count": gpus, "capabilities": ["gpu"]}]}}}
    return service


def serverapp_executor(base: str, certs: str) -> dict:
    service = app_executor(["--runtime-api-address", f"superlink:{LINK_PORT}",
                            "--root-certificates", TLS_CA], 0, base)
    service["volumes"] = [certs_mount(certs), "runs:/app/runs",
                          "../experiments:/app/experiments:ro"]
    service["depends_on"] = ["superlink"]
    return service


def supernode(node: int, nodes: int, auth: bool, base: str, certs: str) -> dict:
    command = ["--superlink", f"${{SUPERLINK_ADDRESS:-superlink:{LINK_PORT}}}",
               "--root-certificates", TLS_CA, "--isolation", "process",
               "--host", "0.0.0.0", "--port", str(NODE_RUNTIME_PORT),
               "--node-config", f"partition-id={node - 1} num-partitions={nodes}"]
    volumes = [certs_mount(certs)]
    if auth:
        command += ["--auth-supernode-private-key", f"keys/supernode-{node}"]
        volumes.append(f"{certs}/keys/supernode-{node}:/app/keys/supernode-{node}:ro")
    return {"image": IMAGES[base]["supernode"], "command": command, "volumes": volumes,
            "environment": {"FLWR_DISABLE_UPDATE_CHECK": "1"}, "restart": "unless-stopped"}


def clientapp_executor(node: int, gpus: int, base: str) -> dict:
    service = app_executor(["--runtime-api-address", f"supernode-{node}:{NODE_RUNTIME_PORT}",
                            "--insecure"], gpus, base)
    service["volumes"] = [f"data-{node}:/app/data"]
    service["depends_on"] = [f"supernode-{node}"]
    return service


def compose(nodes: int, auth: bool, gpus: int, base: str = "official",
            certs: str = CERTS_DIR) -> dict:
    services = {"superlink": superlink(auth, base, certs),
                "superexec-serverapp": serverapp_executor(base, certs)}
    for node in range(1, nodes + 1):
        services[f"supernode-{node}"] = supernode(node, nodes, auth, base, certs)
        services[f"superexec-clientapp-{node}"] = clientapp_executor(node, gpus, base)
    volumes = {"runs": {}, **{f"data-{node}": {} for node in range(1, nodes + 1)}}
    return {"services": services, "volumes": volumes}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2, help="SuperNodes (participants)")
    parser.add_argument("--auth", action="store_true", help="SuperNode authentication")
    parser.add_argument("--gpus", type=int, default=1,
                        help="GPUs reserved per ClientApp SuperExec (0: CPU-only image)")
    parser.add_argument("--base", choices=sorted(IMAGES), default="official",
                        help="Flower's official images, or docker/build-base.sh's stand-ins")
    parser.add_argument("--certs", default=CERTS_DIR,
                        help="folder of generate-certs.sh's output (relative: from docker/)")
    args = parser.parse_args(argv)
    if args.nodes < 1 or args.gpus < 0:
        parser.error("--nodes must be at least 1 and --gpus at least 0")
    options = "".join([f" --nodes {args.nodes}", " --auth" if args.auth else "",
                       f" --gpus {args.gpus}",
                       f" --base {args.base}" if args.base != "official" else "",
                       f" --certs {args.certs}" if args.certs != CERTS_DIR else ""])
    header = (f"# Generated by `python docker/compose.py{options}`; edit that script, "
              "not this file.\n")
    sys.stdout.write(header + yaml.safe_dump(
        compose(args.nodes, args.auth, args.gpus, args.base, args.certs),
        sort_keys=False, width=100))


if __name__ == "__main__":
    main()
