#!/bin/sh
# Installs the build into a fresh prefix and builds a program outside the
# tree against it twice: with the CMake package (find_package(knit)) and with
# pkg-config.  Both programs must run and use a replica.
set -eu
build=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
lib=$(ls -d "$tmp/prefix"/lib*/ | head -n 1)
cmake -S "$src" -B "$tmp/cm" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/cm" >/dev/null
LD_LIBRARY_PATH=$lib "$tmp/cm/consumer" "$tmp/a.db"
PKG_CONFIG_PATH=$lib/pkgconfig
export PKG_CONFIG_PATH
cc ${CFLAGS:-} -o "$tmp/pc" "$src/main.c" $(pkg-config --cflags --libs knit)
LD_LIBRARY_PATH=$lib "$tmp/pc" "$tmp/b.db"
