#!/bin/sh
# libknit.so exports exactly the functions its installed headers declare
# (knit_api.txt, made from them at configure time), and nothing else.
set -eu
lib=$1 api=$2
got=$(mktemp)
trap 'rm -f "$got"' EXIT
nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' | sed 's/@.*//' | sort -u >"$got"
if ! diff -u "$api" "$got"; then
    echo "exports.sh: libknit's exports differ from its installed API (- missing, + extra)" >&2
    exit 1
fi
echo "exports.sh: $(wc -l <"$got") symbols, all from installed headers"
