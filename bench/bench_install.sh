#!/usr/bin/env bash
# A fresh install from the lock file, timed: the README's two pip commands (pip itself, then the project
# non-editable with the station extras, both constrained by constraints.txt) into a new virtual
# environment, then `edge-inspect --version` and `config check` on the embedded default from another folder.
#
#   bash bench/bench_install.sh [warm|cold] [EXTRAS]
#     warm (default): the user's pip cache as it is (after one earlier install: no downloads, wheels cached)
#     cold: an empty, throw-away pip cache: every package is downloaded again (registry and network time count)
#   EXTRAS default: audio,camera,plc (what a station installs; `make run` uses the same)
#
# Prints one line per step with its seconds and a JSON summary; keeps nothing but the summary in
# bench/results/install-<mode>-<time>.json.
set -euo pipefail

MODE=${1:-warm}
EXTRAS=${2:-audio,camera,plc}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

case "$MODE" in
  warm) ;;
  cold) export PIP_CACHE_DIR="$WORK/pip-cache" ;;
  *) echo "usage: $0 [warm|cold] [EXTRAS]" >&2; exit 2 ;;
esac

now() { date +%s.%N; }
step() {  # step NAME COMMAND...: run, time, print
  local name=$1; shift
  local start; start=$(now)
  "$@" >"$WORK/$name.log" 2>&1 || { echo "$name failed:"; tail -20 "$WORK/$name.log"; exit 1; }
  local took; took=$(awk "BEGIN { print $(now) - $start }")
  printf '%-14s %8.1f s\n' "$name" "$took"
  eval "T_${name//-/_}=$took"
}

echo "fresh install from constraints.txt ($MODE pip cache, extras $EXTRAS) on $(nproc) CPUs, $("$PYTHON" --version)"
step venv "$PYTHON" -m venv "$WORK/venv"
step pip "$WORK/venv/bin/pip" install --quiet -c "$ROOT/constraints.txt" pip
step project "$WORK/venv/bin/pip" install --quiet -c "$ROOT/constraints.txt" "$ROOT[$EXTRAS]"
mkdir -p "$WORK/elsewhere"
step check bash -c "cd '$WORK/elsewhere' && HOME='$WORK/home' '$WORK/venv/bin/edge-inspect' --version \
  && HOME='$WORK/home' '$WORK/venv/bin/edge-inspect' config check"
TOTAL=$(awk "BEGIN { print $T_venv + $T_pip + $T_project }")
PACKAGES=$("$WORK/venv/bin/pip" list --format=freeze 2>/dev/null | wc -l)
SIZE_MB=$(du -sm "$WORK/venv" | cut -f1)
printf '%-14s %8.1f s  (%s packages, %s MB)\n' "install total" "$TOTAL" "$PACKAGES" "$SIZE_MB"

mkdir -p "$ROOT/bench/results"
OUT="$ROOT/bench/results/install-$MODE-$(date -u +%Y%m%dT%H%M%SZ).json"
cat >"$OUT" <<JSON
{"command": "bash bench/bench_install.sh $MODE $EXTRAS", "mode": "$MODE", "extras": "$EXTRAS",
 "cpus": $(nproc), "python": "$("$PYTHON" --version | cut -d' ' -f2)",
 "seconds": {"venv": $T_venv, "pip": $T_pip, "project": $T_project, "check": $T_check, "install_total": $TOTAL},
 "packages": $PACKAGES, "venv_mb": $SIZE_MB}
JSON
echo "summary: $OUT"
