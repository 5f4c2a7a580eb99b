#!/usr/bin/env bash
# layers.sh OBJ...: the objects of one folder, listed bottom up (the order of
# its CMake source list).  Fails when an object uses a symbol that an object
# listed after it defines: calls run down the list only, so the files of the
# folder call each other in no circle.
set -euo pipefail
declare -A where
objs=("$@")
i=0
for o in "$@"; do
    while read -r sym; do where[$sym]=$i; done < <(nm --defined-only -g "$o" | awk '{print $3}')
    i=$((i + 1))
done
bad=0 i=0
for o in "$@"; do
    while read -r sym; do
        j=${where[$sym]:-}
        if [ -n "$j" ] && [ "$j" -gt "$i" ]; then
            echo "layers: $(basename "$o" .o) uses $sym from $(basename "${objs[$j]}" .o), listed after it"
            bad=1
        fi
    done < <(nm -u "$o" | awk '{print $2}')
    i=$((i + 1))
done
[ $bad -eq 0 ] && echo "layers: $# objects, every call runs down the list"
exit $bad
