#!/usr/bin/env bash
# kubelet-cert.sh CP_DIR NODE_NAME NODE_IP OUT_PREFIX: signs a kubelet serving
# certificate with the CA of the control plane under CP_DIR (what TLS
# bootstrap would get approved) and writes OUT_PREFIX.crt and OUT_PREFIX.key.
# The API server verifies kubelets against that CA
# (--kubelet-certificate-authority) for `kubectl logs/exec` and the node
# proxy, so a self-signed kubelet certificate would not do.
# Subject CN=system:node:NODE_NAME, O=system:nodes; SAN IP:NODE_IP; EC P-256;
# valid two days. Root is not needed.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$SCRIPT_DIR/lib.sh"

[ "$#" -eq 4 ] || die "usage: $(basename "$0") CP_DIR NODE_NAME NODE_IP OUT_PREFIX"
cp_dir="$1" node="$2" node_ip="$3" out="$4"
# shellcheck disable=SC1091
. "$cp_dir/controlplane.env"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$out.key" 2>/dev/null
openssl req -new -key "$out.key" -subj "/O=system:nodes/CN=system:node:$node" -out "$out.csr" 2>/dev/null
printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:%s\n' \
	"$node_ip" >"$out.ext"
# -CAserial next to the output: the CA's folder may be shared by several runs.
openssl x509 -req -in "$out.csr" -CA "$CA_CERT" -CAkey "$CA_KEY" -CAserial "$out.srl" -CAcreateserial \
	-days 2 -sha256 -extfile "$out.ext" -out "$out.crt" 2>/dev/null
rm -f "$out.csr" "$out.ext" "$out.srl"
