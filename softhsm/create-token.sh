#!/bin/sh
# Creates a SoftHSM2 token for vaultd in DIR, idempotently.
#
#   create-token.sh DIR [LABEL] [PIN_FILE]
#
# Writes DIR/softhsm2.conf (token directory DIR/tokens), initialises a token
# labelled LABEL (default: vaultd) with a random user PIN in PIN_FILE
# (default: DIR/hsm.pin) and a random SO PIN in DIR/so.pin, both mode 0600.
# If a token with that label already exists, nothing is changed.
# Prints the export line for SOFTHSM2_CONF.
set -eu

usage() {
    echo "usage: $0 DIR [LABEL] [PIN_FILE]" >&2
    exit 2
}

[ $# -ge 1 ] && [ $# -le 3 ] || usage
command -v softhsm2-util >/dev/null 2>&1 || {
    echo "softhsm2-util not found: install SoftHSM2 (apt-get install softhsm2)" >&2
    exit 1
}

here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$1"
dir=$(cd "$1" && pwd)
label=${2:-vaultd}
pin_file=${3:-$dir/hsm.pin}
so_pin_file=$dir/so.pin
conf=$dir/softhsm2.conf

mkdir -p "$dir/tokens"
chmod 0700 "$dir/tokens"
if [ ! -f "$conf" ]; then
    sed "s|@TOKENDIR@|$dir/tokens|" "$here/softhsm2.conf.template" >"$conf"
fi
SOFTHSM2_CONF=$conf
export SOFTHSM2_CONF

# "Label:" lines of initialised tokens, padding stripped.
if softhsm2-util --show-slots 2>/dev/null |
    sed -n 's/^[[:space:]]*Label:[[:space:]]*\(.*[^[:space:]]\)[[:space:]]*$/\1/p' |
    grep -Fqx -- "$label"; then
    echo "token \"$label\" already exists in $dir/tokens; left unchanged" >&2
    if [ ! -f "$pin_file" ]; then
        echo "warning: $pin_file does not exist; the token's user PIN is wherever it was written first" >&2
    fi
else
    random_pin() {
        od -An -tx1 -N16 /dev/urandom | tr -d ' \n'
    }
    old_umask=$(umask)
    umask 077
    mkdir -p "$(dirname "$pin_file")"
    random_pin >"$pin_file"
    echo >>"$pin_file"
    random_pin >"$so_pin_file"
    echo >>"$so_pin_file"
    umask "$old_umask"
    chmod 0600 "$pin_file" "$so_pin_file"
    softhsm2-util --init-token --free --label "$label" \
        --pin "$(head -n 1 "$pin_file")" --so-pin "$(head -n 1 "$so_pin_file")" >/dev/null
    echo "token \"$label\" created; user PIN in $pin_file, SO PIN in $so_pin_file" >&2
fi

echo "export SOFTHSM2_CONF=$conf"
