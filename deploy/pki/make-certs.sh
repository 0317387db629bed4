#!/usr/bin/env bash
# Make a CA, a broker certificate, the cloud's client certificate and one client certificate per
# device (CN = device_id, as Mosquitto's use_identity_as_username and the %u ACL patterns expect).
#
#   deploy/pki/make-certs.sh OUTDIR --server HOST_OR_IP [--device MAC]... [--days N]
#
# Writes OUTDIR/ca.crt, ca.key, server.crt/.key, cloud.crt/.key, <MAC>.crt/.key (keys 0600). An
# existing CA in OUTDIR is reused, so devices can be added later. ECDSA P-256, SHA-256.
set -euo pipefail

usage() { echo "usage: $0 OUTDIR --server HOST_OR_IP [--device MAC]... [--days N]" >&2; exit 2; }
[ $# -ge 1 ] || usage
out=$1; shift
server=""; days=825; devices=()
while [ $# -gt 0 ]; do
  case $1 in
    --server) server=${2:?}; shift 2 ;;
    --device) [[ ${2:-} =~ ^[0-9a-f]{12}$ ]] || { echo "$0: --device takes a MAC as 12 lowercase hex digits" >&2; exit 2; }
              devices+=("$2"); shift 2 ;;
    --days) days=${2:?}; shift 2 ;;
    *) usage ;;
  esac
done
[ -n "$server" ] || usage
mkdir -p "$out"
umask 077

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

if [ ! -f "$out/ca.crt" ]; then
  key "$out/ca.key"
  openssl req -x509 -new -key "$out/ca.key" -sha256 -days "$days" -subj "/CN=SmartPlus edge CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$out/ca.crt"
fi

issue() {  # name, subject CN, extensions
  local name=$1 cn=$2 ext=$3
  key "$out/$name.key"
  openssl req -new -key "$out/$name.key" -subj "/CN=$cn" -out "$out/$name.csr"
  openssl x509 -req -in "$out/$name.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
    -days "$days" -sha256 -extfile <(printf '%s\n' "$ext") -out "$out/$name.crt" 2>/dev/null
  rm -f "$out/$name.csr"
}

if [[ $server =~ ^[0-9.]+$ || $server == *:* ]]; then san="IP:$server"; else san="DNS:$server"; fi
issue server "$server" "subjectAltName=$san
extendedKeyUsage=serverAuth
keyUsage=critical,digitalSignature"
issue cloud cloud "extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature"
for mac in "${devices[@]}"; do
  issue "$mac" "$mac" "extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature"
done
chmod 644 "$out"/*.crt
echo "$out: ca.crt server.crt cloud.crt ${devices[*]/%/.crt}"
