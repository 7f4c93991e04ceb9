#!/usr/bin/env bash
# Every function is defined in one object file of its library. A static archive hides a second
# definition: the linker takes the first object that defines a symbol and never pulls in one
# whose symbols are all defined already, so a function left behind when a file is split (its copy
# moved to a new file) builds, links and runs, and the copy is dead code that no test reaches.
# Seen once (PoolController::AgentConnected in two files). Prints each such symbol; exit 1 if any.
#   tests/build_checks/one_definition.sh BUILD_DIR
set -uo pipefail
BUILD="${1:?usage: one_definition.sh BUILD_DIR}"
found=0
libs=$(find "$BUILD/src" -name 'libtidepool_*.a' | sort)
[ -n "$libs" ] || { echo "no libtidepool_*.a under $BUILD/src" >&2; exit 2; }
for lib in $libs; do
  # "archive:object:address T symbol" for each global function defined; a symbol in two objects.
  twice=$(nm -A --defined-only "$lib" 2>/dev/null |
    awk '$2 == "T" { n = split($1, a, ":"); print a[n - 1] "\t" $3 }' | sort -u | cut -f2 | sort | uniq -d)
  for sym in $twice; do
    objs=$(nm -A --defined-only "$lib" | awk -v s="$sym" '$2 == "T" && $3 == s { n = split($1, a, ":"); print a[n - 1] }' | tr '\n' ' ')
    echo "$(basename "$lib"): $(c++filt "$sym") is defined in: $objs"
    found=1
  done
done
[ "$found" = 0 ] && echo "one definition of each function in $(echo "$libs" | wc -w) libraries"
exit "$found"
