#!/usr/bin/env bash
# The same benchmark on the library at two revisions, alternately, in one run: a ratio between
# revisions measured under the same machine conditions (this VM's speed varies between sittings).
#
#   bash benchmarks/ab.sh BASE_REV ROUNDS python benchmarks/step_time.py --algo sql --steps 6
#
# BASE_REV's src/ (a git worktree under /tmp) and this checkout's src/ take turns, ROUNDS times
# each, base first; the benchmark script itself is always this checkout's. Each output is
# printed under a header naming its revision. Run it with nothing else on the machine.
set -euo pipefail
base=$1 rounds=$2
shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
tree=/tmp/stableprompt-ab-$(git -C "$root" rev-parse --short "$base")
[ -d "$tree" ] || git -C "$root" worktree add --detach "$tree" "$base" >/dev/null
head=$(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet -- src || echo "+changes")
for round in $(seq "$rounds"); do
    for side in base head; do
        if [ "$side" = base ]; then src=$tree/src name=$base; else src=$root/src name=$head; fi
        echo "=== round $round: $side ($name) ==="
        (cd "$root" && PYTHONPATH="$src" "$@")
    done
done
