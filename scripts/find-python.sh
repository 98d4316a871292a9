#!/usr/bin/env bash
# Prints the path of the first Python (3.11+) that can import every module
# named on the command line, trying $SNAKEPIT_PYTHON, python3 on PATH,
# /usr/bin/python3 and python, the same order the runtime uses. Exits 1 when
# none can.
set -u
mods=("$@")
check="import sys; assert sys.version_info >= (3, 11)"
for m in "${mods[@]}"; do check="$check; import $m"; done
for cand in ${SNAKEPIT_PYTHON:-} python3 /usr/bin/python3 python; do
  path=$(command -v "$cand" 2>/dev/null) || continue
  if "$path" -c "$check" >/dev/null 2>&1; then
    echo "$path"
    exit 0
  fi
done
exit 1
