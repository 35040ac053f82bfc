#!/usr/bin/env bash
# The deployment of docker/compose.py in real containers, end to end:
#   1. images: the base (Flower's official images, or docker/build-base.sh's stand-ins built from
#      Debian packages where the image hub cannot be reached) and the fedattack app image
#      (docker/Dockerfile, torch's CPU build: from PyTorch's CPU index, or where the hub cannot be
#      reached the CPU wheel that `pip download` puts in docker/wheels/);
#   2. a fresh CA, server certificate and SuperNode key pairs (docker/generate-certs.sh);
#   3. from the compose file (`docker/compose.py --auth --gpus 0`): the SuperLink with TLS and
#      SuperNode authentication, the ServerApp's SuperExec, the two SuperNode keys registered,
#      then two SuperNodes and their ClientApps' SuperExecs; a SuperNode with an unregistered key
#      is started too and must be refused;
#   4. a shrunk quickstart submitted with `flwr run`, waited for until `flwr ls` says
#      finished:completed, its run directory copied out (docker cp) and attacked offline here
#      (`fedattack run` reuses the finished training);
#   5. checks: the splits equal the simulation's, the results are finite;
#   6. everything torn down (containers, network, volumes) however the script ends.
# Usage: docker/compose-run.sh [-o RUN_DIR] [-b auto|local|official] [-t TIMEOUT_S]
#   RUN_DIR (default runs/compose-run) is replaced; it ends up with the run directory, the
#   attack's results and deploy/ (every container's log). The engine must be running (dockerd).
#   PYTHON (default .venv/bin/python): the project's interpreter, with flwr and fedattack.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

out=runs/compose-run base=auto timeout_s=1800
while getopts "o:b:t:h" opt; do
  case $opt in
    o) out=$OPTARG ;;
    b) base=$OPTARG ;;
    t) timeout_s=$OPTARG ;;
    *) sed -n '2,20p' "$0"; exit 2 ;;
  esac
done
case $base in auto|local|official) ;; *) echo "error: -b takes auto, local or official" >&2; exit 2 ;; esac
[[ $timeout_s =~ ^[0-9]+$ ]] || { echo "error: -t takes seconds, got '$timeout_s'" >&2; exit 2; }
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || { echo "error: $PY not found (make install, or set PYTHON)" >&2; exit 2; }
bin=$(dirname "$PY")
FLWR_VERSION=1.42.0
NAME=compose-quickstart
APP_UID=49999  # the user `app` of Flower's images (and of the stand-ins) reads the certificates
started=$SECONDS
log() { echo "[compose-run +$((SECONDS - started))s] $*"; }
slow() { nice -n 10 ionice -c 3 "$@"; }

docker info >/dev/null 2>&1 || { echo "error: no docker engine answers (start dockerd)" >&2; exit 2; }
# Compose v2 (`docker compose`) where installed, else Debian's docker-compose (v1).
if docker compose version >/dev/null 2>&1; then dc_cmd=(docker compose)
elif command -v docker-compose >/dev/null; then dc_cmd=(docker-compose)
else echo "error: neither 'docker compose' nor docker-compose is installed" >&2; exit 2; fi

work=$(mktemp -d /tmp/fedattack-compose.XXXXXX)
project=fedattack-run-$$  # every container, the network and the volumes carry this name
compose_file=$work/compose.yaml
dc() { "${dc_cmd[@]}" -p "$project" -f "$compose_file" --project-directory "$root/docker" "$@"; }
export FLWR_HOME=$work/flwr
intruder=$project-intruder

teardown() {
  local code=$?
  trap - EXIT INT TERM
  set +e
  if [ -f "$compose_file" ]; then
    mkdir -p "$out/deploy"
    dc logs --no-color > "$out/deploy/compose.log" 2>&1
    docker logs "$intruder" > "$out/deploy/intruder.log" 2>&1
    docker rm -f "$intruder" >/dev/null 2>&1
    dc down --volumes --remove-orphans --timeout 10 >/dev/null 2>&1
    left=$(docker ps -aq --filter "label=com.docker.compose.project=$project"; \
           docker network ls -q --filter "name=${project}_"; \
           docker volume ls -q --filter "name=${project}_")
    if [ -n "$left" ]; then log "teardown left: $left"; code=${code/#0/1}; else
      log "torn down: no container, network or volume of $project is left"; fi
  fi
  rm -rf "$work"
  [ "$code" = 0 ] && log "done: $out" || log "failed (exit $code)"
  exit "$code"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 1. Images -------------------------------------------------------------------------------------
if [ "$base" = auto ]; then
  if timeout 60 docker pull -q "flwr/superexec:$FLWR_VERSION" >/dev/null 2>&1 \
     && timeout 60 docker pull -q "flwr/superlink:$FLWR_VERSION" >/dev/null 2>&1 \
     && timeout 60 docker pull -q "flwr/supernode:$FLWR_VERSION" >/dev/null 2>&1; then
    base=official
  else
    base=local; log "the image hub cannot be reached: local base images from Debian packages"
  fi
fi
build_args=()
if [ "$base" = local ]; then
  bash docker/build-base.sh 2> "$work/base.err" | sed 's/^/  /' \
    || { grep -v -E 'DEPRECATED|buildx|^ *$' "$work/base.err" >&2; exit 1; }
  build_args+=(--build-arg "BASE_IMAGE=fedattack-superexec-base:$FLWR_VERSION")
  # torch's CPU wheel, at the pinned version, from PyTorch's CPU index (where pip cannot reach
  # it, from wherever its configuration points) into the build context; the stand-in's python3
  # is 3.11, as here. A wheel without +cpu would be the CUDA build.
  torch_version=$(sed -n 's/^torch==//p' constraints.txt)
  slow "$PY" -m pip download -q -c constraints.txt --no-deps \
    --index-url https://download.pytorch.org/whl/cpu -d docker/wheels torch 2> "$work/pip.err" \
    || { cat "$work/pip.err" >&2; exit 1; }
  wheel=$(cd docker/wheels && ls "torch-$torch_version+cpu-"*.whl 2>/dev/null | head -1)
  [ -n "$wheel" ] || { log "no CPU wheel of torch $torch_version in docker/wheels"; exit 1; }
  build_args+=(--build-arg "TORCH_WHEEL=$wheel")
  log "torch from the build context: docker/wheels/$wheel"
fi
t=$SECONDS
slow docker build -q -f docker/Dockerfile "${build_args[@]}" -t fedattack-superexec:cpu . \
  > /dev/null 2> "$work/build.err" || { grep -v -E 'DEPRECATED|buildx' "$work/build.err" >&2; exit 1; }
log "app image fedattack-superexec:cpu built in $((SECONDS - t)) s" \
    "($(docker image inspect -f '{{.Size}}' fedattack-superexec:cpu | awk '{printf "%.0f MB", $1/1e6}'))"

# 2. Certificates and keys -----------------------------------------------------------------------
certs=$work/certs
bash docker/generate-certs.sh -o "$certs" -n 2 | sed 's/^/  /'
ssh-keygen -q -t ecdsa -b 384 -N "" -C intruder -f "$certs/keys/intruder"
if [ "$(id -u)" = 0 ]; then chown -R "$APP_UID:$APP_UID" "$certs"; else chmod -R a+rX "$certs"; fi

# 3. The deployment ----------------------------------------------------------------------------
"$PY" docker/compose.py --nodes 2 --auth --gpus 0 --base "$base" --certs "$certs" > "$compose_file"
port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export SUPERLINK_PORT=$port
mkdir -p "$FLWR_HOME"
cat > "$FLWR_HOME/config.toml" <<EOF
[superlink]
default = "compose"

[superlink.compose]
address = "127.0.0.1:$port"
root-certificates = "$certs/ca.crt"
EOF
flwr() { "$bin/flwr" "$@" --format json; }
log "compose project $project (${dc_cmd[*]}), SuperLink published on 127.0.0.1:$port"
dc up -d --no-build superlink superexec-serverapp 2>&1 | sed 's/^/  /'
# `flwr` exits 0 also when it fails: its JSON answer says whether it reached the SuperLink.
succeeded() { "$PY" -c 'import json, sys; sys.exit(0 if json.load(sys.stdin).get("success") else 1)' 2>/dev/null; }
deadline=$((SECONDS + 180))
until flwr supernode list compose 2>/dev/null | succeeded; do
  [ $SECONDS -lt $deadline ] || { log "the SuperLink did not answer in 180 s"; exit 1; }
  sleep 2
done
# The TLS handshake of a client holding our CA, checking the certificate's name "superlink"
# (Python's ssl: it fails on an unverified certificate, openssl s_client only reports it).
tls=$("$PY" - "$port" "$certs/ca.crt" <<'EOF'
import socket, ssl, sys
context = ssl.create_default_context(cafile=sys.argv[2])
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30) as sock:
    with context.wrap_socket(sock, server_hostname="superlink") as tls:
        subject = dict(pair[0] for pair in tls.getpeercert()["subject"])
        print(f"{tls.version()}, Verification: OK, Verified peername: superlink, "
              f"certificate CN={subject['commonName']}, cipher {tls.cipher()[0]}")
EOF
) || { log "the TLS handshake with the SuperLink failed"; exit 1; }
log "SuperLink answers over TLS: $tls"
# A client that does not speak TLS gets no answer from that port.
if curl -s -m 10 -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null; then
  log "the SuperLink answered plain HTTP"; exit 1
fi
log "plain HTTP to the SuperLink's port gets no answer"
# Each registration is retried: the SuperLink may still be starting its Control API.
json_get() { "$PY" -c 'import json, sys; a = json.load(sys.stdin); print(a[sys.argv[1]]) if a.get("success") else sys.exit(str(a))' "$1"; }
for node in 1 2; do
  for try in 1 2 3 4 5 6; do
    answer=$(flwr supernode register "$certs/keys/supernode-$node.pub" compose 2>&1) && \
      node_id=$(echo "$answer" | json_get node-id 2>/dev/null) && break
    [ "$try" -lt 6 ] || { log "registering supernode-$node failed: $answer"; exit 1; }
    sleep 5
  done
  log "registered the public key of supernode-$node: node id $node_id"
done
registered=$(flwr supernode list compose | "$PY" -c 'import json, sys; print(len(json.load(sys.stdin)["nodes"]))')
[ "$registered" = 2 ] || { log "the SuperLink lists $registered SuperNodes, not 2"; exit 1; }
dc up -d --no-build supernode-1 supernode-2 superexec-clientapp-1 superexec-clientapp-2 2>&1 \
  | sed 's/^/  /'
# A SuperNode whose key the SuperLink does not know: it must be refused.
docker run -d --name "$intruder" --network "${project}_default" \
  -v "$certs:/app/certificates:ro" -v "$certs/keys/intruder:/app/keys/intruder:ro" \
  "$(dc config | "$PY" -c 'import sys, yaml; print(yaml.safe_load(sys.stdin)["services"]["supernode-1"]["image"])')" \
  --superlink superlink:8000 --root-certificates certificates/ca.crt --isolation process \
  --node-config "partition-id=0 num-partitions=2" --auth-supernode-private-key keys/intruder \
  >/dev/null

# 4. The run ----------------------------------------------------------------------------------
"$PY" - "$work/config.yaml" "$NAME" <<'EOF'
"""The quickstart shrunk to two SuperNodes, two rounds and a tiny attack."""
import sys
from pathlib import Path

from fedattack.config import Experiment, experiment_yaml, load_experiment

exp = load_experiment("experiments/quickstart.yaml").model_dump()
exp["name"] = sys.argv[2]
exp["data"].update(num_records=3000, train_size=300, nonmember_size=600,
                   knowledge={"train_members": 100, "train_nonmembers": 100,
                              "test_members": 100, "test_nonmembers": 100})
exp["federation"].update(num_participants=2, rounds=2, record_rounds=[1, 2])
exp["attack"].update(snapshots=[1, 2], epochs=2, kernels=8)
Path(sys.argv[1]).write_text(experiment_yaml(Experiment.model_validate(exp)))
EOF
# run_in_containers CONFIG NAME: the experiment CONFIG through `flwr run` on the deployment, into
# /app/runs/NAME inside the ServerApp's SuperExec; fails unless it finishes completed.
run_in_containers() {
  local config=$1 dir=/app/runs/$2 run_id status deadline
  dc exec -T superexec-serverapp sh -c "mkdir -p $dir && cat > $dir/config.yaml" < "$config"
  run_id=$(flwr run . compose --run-config "config-path=\"$dir/config.yaml\" run-dir=\"$dir\"" \
    | "$PY" -c 'import json, sys; a = json.load(sys.stdin); print(a["run-id"]) if a.get("success") else sys.exit(a)')
  log "submitted run $run_id ($2; flwr run, over TLS)"
  deadline=$((SECONDS + timeout_s))
  while :; do
    status=$(flwr ls compose --run-id "$run_id" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["runs"][0]["status"])')
    case $status in finished*) break ;; esac
    [ $SECONDS -lt $deadline ] || { log "run $run_id still $status after $timeout_s s"; exit 1; }
    sleep 5
  done
  log "run $run_id: $status"
  [ "$status" = finished:completed ] || exit 1
}
run_dir=/app/runs/$NAME
run_in_containers "$work/config.yaml" "$NAME"

# The refused SuperNode: it stops on its own, its key unknown to the SuperLink, and the SuperLink
# lists only the two registered nodes.
intruder_code=$(timeout 180 docker wait "$intruder" || echo "still running")
# Read whole before it is searched: `docker logs | grep -q` fails under pipefail whenever grep
# stops reading at its match before docker has written the rest (SIGPIPE), a refused node or not.
intruder_log=$(docker logs "$intruder" 2>&1 | sed 's/\x1b\[[0-9;]*m//g')
log "unregistered SuperNode: stopped with exit code $intruder_code; its log:"
grep -E "Failed to activate|Exit Code|establish" <<< "$intruder_log" | sed 's/^/  /' || true
log "the SuperLink's log on it:"
dc logs --no-color superlink 2>&1 | grep -oE "ApiError:[0-9]+.*exception: No SuperNode found with the given public key" \
  | cut -c1-60,250- | sort -u | sed 's/^/  /' || true
nodes=$(flwr supernode list compose | "$PY" -c 'import json, sys; print(len(json.load(sys.stdin)["nodes"]))')
log "the SuperLink lists $nodes SuperNodes (the two registered ones)"
[ "$intruder_code" != "still running" ] && [ "$nodes" = 2 ] \
  && grep -q "Failed to activate SuperNode" <<< "$intruder_log" \
  || { log "the unregistered SuperNode was not refused"; exit 1; }
# Who reached the SuperLink: every client of its one port, which speaks only TLS.
dc logs --no-color superlink 2>&1 | grep -m1 -oE "Uvicorn running on [a-z]+://[^ ]+" | sed 's/^/  SuperLink: /' || true
declare -A who
for c in $(dc ps -q); do
  ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$c")
  [ -n "$ip" ] && who[$ip]=$(docker inspect -f '{{.Name}}' "$c" | sed "s|^/||; s|^${project}_||; s|_1$||")
done
gateway=$(docker network inspect -f '{{range .IPAM.Config}}{{.Gateway}}{{end}}' "${project}_default")
who[$gateway]="the host (flwr CLI)"
clients=$(dc logs --no-color superlink 2>&1 | grep -oE 'uvicorn.access\] [0-9.]+:[0-9]+ - "POST /v1/[a-z]+' \
  | sed -E 's/uvicorn.access\] ([0-9.]+):[0-9]+ - "POST \/v1\/([a-z]+)/\1 \2/' | sort -u)
log "clients of the SuperLink's TLS port (API used):"
while read -r ip api; do
  echo "  ${who[$ip]:-a container gone since (the refused SuperNode)} ($ip): $api API"
done <<< "$clients"

# The same federation under SecAgg+ (issue 14): Flower's SecAggPlusWorkflow in the ServerApp
# against secaggplus_mod in the SuperNodes' ClientApps; the aggregator's view must hold the
# models it sent and the aggregates, no participant's upload.
"$PY" - "$work/config.yaml" "$work/secagg.yaml" <<'EOF'
import sys
from pathlib import Path

from fedattack.config import Experiment, experiment_yaml, load_experiment

exp = load_experiment(sys.argv[1]).model_dump()
exp["name"] = "compose-secagg"
exp["attack"] = None
exp["federation"].update(rounds=1, record_rounds="all", secure_aggregation=True)
Path(sys.argv[2]).write_text(experiment_yaml(Experiment.model_validate(exp)))
EOF
run_in_containers "$work/secagg.yaml" compose-secagg
rm -rf "$out.secagg"
mkdir -p "$(dirname "$out")"
docker cp "$(dc ps -q superexec-serverapp):/app/runs/compose-secagg" "$out.secagg"
"$PY" - "$out.secagg" <<'EOF'
import sys
from pathlib import Path

from fedattack.io import read_json
from fedattack.snapshots import SnapshotStore

run = Path(sys.argv[1])
record = read_json(run / "run.json")
assert record["status"] == "finished", record.get("status")
assert [r["accepted"] for r in record["rounds"]] == [[0, 1]], record["rounds"]
kinds = sorted({(r.kind, r.round) for r in SnapshotStore(run / "snapshots").view("global").records()})
assert kinds == [("global", 0), ("global", 1)], kinds
print(f"  SecAgg+: round 1 aggregated from participants 0 and 1; the aggregator recorded {kinds},"
      " no upload")
EOF
log "SecAgg+ in the containers: checks passed ($out.secagg)"

# 5. Out of the containers, the offline attack, the checks ---------------------------------------
rm -rf "$out"
mkdir -p "$(dirname "$out")"
docker cp "$(dc ps -q superexec-serverapp):$run_dir" "$out"
log "copied the run directory out to $out"
t=$SECONDS
slow "$bin/fedattack" run "$out/config.yaml" --out "$out" --quiet
log "offline attack in $((SECONDS - t)) s"
"$PY" - "$out" <<'EOF'
"""The splits are the simulation's (a pure function of the config), the results finite."""
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

from fedattack.config import load_experiment
from fedattack.experiment import prepare_run
from fedattack.io import read_json

run = Path(sys.argv[1])
exp = load_experiment(run / "config.yaml")
with tempfile.TemporaryDirectory() as sim:
    prepare_run(exp, sim)  # what `fedattack run` (the simulation) writes before training
    for name in ("membership.npz", "knowledge.npz"):
        want, got = np.load(Path(sim) / "splits" / name), np.load(run / "splits" / name)
        assert sorted(want.files) == sorted(got.files), name
        for key in want.files:
            assert np.array_equal(want[key], got[key]), f"{name}:{key} differs"
    print(f"  splits equal the simulation's: {name} ({', '.join(sorted(want.files))})")
results = read_json(run / "results.json")
for row in results:
    values = [row[k] for k in ("auc", "attack_accuracy")]
    assert all(isinstance(v, float) and math.isfinite(v) for v in values), row
    print(f"  {row['attack']:<16} snapshot {row.get('snapshots', row.get('snapshot'))}: "
          f"AUC {row['auc']:.3f}, accuracy {row['attack_accuracy']:.3f}")
EOF
log "checks passed; total $((SECONDS - started)) s"
