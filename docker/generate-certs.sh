#!/usr/bin/env bash
# Generates what a TLS deployment needs, into one folder that the compose file (or
# `fedattack deploy-local`) mounts:
#   ca.crt, ca.key          a private certificate authority
#   server.pem, server.key  the SuperLink's certificate, signed by the CA; its SANs cover
#                           localhost, 127.0.0.1, the compose service name `superlink` and
#                           every extra name given with -s (the SuperLink host's DNS name or IP)
#   keys/supernode-<i>[.pub] one ECDSA P-384 key pair (OpenSSH format) per SuperNode, for
#                           SuperNode authentication
# Usage: generate-certs.sh [-o DIR] [-n NODES] [-s SAN]...   e.g. -s DNS:link.example.org -s IP:10.0.0.5
set -euo pipefail

out=certs nodes=2 extra_sans=()
while getopts "o:n:s:h" opt; do
  case $opt in
    o) out=$OPTARG ;;
    n) nodes=$OPTARG ;;
    s) extra_sans+=("$OPTARG") ;;
    *) sed -n '2,12p' "$0"; exit 2 ;;
  esac
done
if ! [[ $nodes =~ ^[0-9]+$ ]]; then
  echo "error: -n takes a number of SuperNodes, got '$nodes'" >&2; exit 2
fi
for tool in openssl ssh-keygen; do
  command -v "$tool" >/dev/null || { echo "error: $tool is not installed" >&2; exit 2; }
done
if [ -e "$out/ca.crt" ]; then
  echo "error: $out/ca.crt exists; remove $out or choose another -o" >&2; exit 2
fi
mkdir -p "$out/keys"
cd "$out"

sans="DNS:localhost,IP:127.0.0.1,DNS:superlink"
for san in "${extra_sans[@]}"; do sans+=",$san"; done

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-384 -sha256 -days 365 -nodes -subj "/CN=fedattack CA" \
  -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-384 -sha256 -nodes -subj "/CN=superlink" \
  -keyout server.key -out server.csr 2>/dev/null
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
  -sha256 -out server.pem -extfile <(printf "subjectAltName=%s\n" "$sans") 2>/dev/null
rm -f server.csr ca.srl

for i in $(seq 1 "$nodes"); do
  ssh-keygen -q -t ecdsa -b 384 -N "" -C "supernode-$i" -f "keys/supernode-$i"
done
chmod 600 ca.key server.key keys/supernode-*[0-9]
echo "wrote $(pwd): CA, server certificate for $sans, $nodes SuperNode key pairs"
