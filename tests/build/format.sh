#!/bin/sh
# Every C file of the tree is formatted as .clang-format says.
set -eu
cd "$1"
command -v clang-format >/dev/null || { echo "format.sh: clang-format is not installed" >&2; exit 1; }
files=$(git ls-files '*.c' '*.h' 2>/dev/null || find . -name '*.[ch]' -not -path './build*')
if ! clang-format --dry-run --Werror $files; then
    echo "format.sh: run clang-format -i on the files above" >&2
    exit 1
fi
echo "format.sh: $(echo "$files" | wc -w) files formatted"
