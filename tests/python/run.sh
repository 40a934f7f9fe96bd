#!/usr/bin/env bash
# Runs the Google Calendar v3 conformance suite against the confsync emulator, using Google's
# official Python client (google-api-python-client).
#
#   tests/python/run.sh [extra pytest args]
#
# CONFSYNC_BIN: the emulator binary (default: target/release/confsync, relative to the repo root).
# Exit code: pytest's. "No tests collected" (pytest exit 5) is reported as a failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

CONFSYNC_BIN="${CONFSYNC_BIN:-target/release/confsync}"
case "$CONFSYNC_BIN" in
  /*) ;;
  *) CONFSYNC_BIN="$ROOT/$CONFSYNC_BIN" ;;
esac
export CONFSYNC_BIN
if [[ ! -x "$CONFSYNC_BIN" ]]; then
  echo "run.sh: emulator binary not found or not executable: $CONFSYNC_BIN" >&2
  echo "run.sh: build it (cargo build --release) or set CONFSYNC_BIN" >&2
  exit 1
fi

VENV="$ROOT/.venv"
REQS="$ROOT/tests/python/requirements.txt"
if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
fi
# Reinstall only when requirements.txt changed since the last successful install.
STAMP="$VENV/.confsync-conformance-requirements.sha256"
WANT="$(sha256sum "$REQS" | cut -d' ' -f1)"
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$WANT" ]]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS"
  echo "$WANT" > "$STAMP"
fi

rc=0
"$VENV/bin/python" -m pytest -q tests/python "$@" || rc=$?
if [[ $rc -eq 5 ]]; then
  echo "run.sh: pytest collected no tests; treating as failure" >&2
fi
exit "$rc"
