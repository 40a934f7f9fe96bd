#!/usr/bin/env bash
# Property-based API tests: Schemathesis (PyPI) generates requests from the API's OpenAPI document
# (crates/service/openapi.json, fetched from the live service at /v1/openapi.json and first
# checked with openapi-spec-validator) and sends them to a live `confsync serve` (the Calendar
# emulator behind it, SQLite in a temp dir, the local provider, push channels to its own
# loopback URL), checking every answer: no 5xx, a documented status, a documented content type,
# a body valid against the documented schema.
#
#   tests/api/run.sh [extra schemathesis run args]
#
# CONFSYNC_BIN: the confsync binary (default: target/debug/confsync, relative to the repo root).
# API_MAX_EXAMPLES (default 100 per operation) and API_SEED (default 20261204) bound and fix the
# run (about a minute). Exit code: non-zero on any failure, and when no test case ran.
# Schemathesis's reports (JSON, JUnit) go to API_REPORT_DIR (default: the run's temp dir, which
# also holds the two processes' logs and is kept, and printed, on failure).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

CONFSYNC_BIN="${CONFSYNC_BIN:-target/debug/confsync}"
case "$CONFSYNC_BIN" in
  /*) ;;
  *) CONFSYNC_BIN="$ROOT/$CONFSYNC_BIN" ;;
esac
if [[ ! -x "$CONFSYNC_BIN" ]]; then
  echo "run.sh: confsync binary not found or not executable: $CONFSYNC_BIN" >&2
  echo "run.sh: build it (cargo build -p confsync) or set CONFSYNC_BIN" >&2
  exit 1
fi

# The repository's venv (shared with tests/python, whose pins agree with ours); reinstalled only
# when requirements.txt changed since the last successful install.
VENV="$ROOT/.venv"
REQS="$ROOT/tests/api/requirements.txt"
if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
fi
STAMP="$VENV/.confsync-api-requirements.sha256"
WANT="$(sha256sum "$REQS" | cut -d' ' -f1)"
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$WANT" || ! -x "$VENV/bin/schemathesis" ]]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS"
  echo "$WANT" > "$STAMP"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/confsync-api.XXXXXX")"
REPORTS="${API_REPORT_DIR:-$WORK/reports}"
mkdir -p "$REPORTS"
EMULATOR_PID=""
SERVE_PID=""
stop() {
  # Only the two processes this script started, by their ids.
  for pid in "$SERVE_PID" "$EMULATOR_PID"; do
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
}
fail() {
  echo "run.sh: $*" >&2
  echo "run.sh: logs and reports in $WORK" >&2
  stop
  exit 1
}
trap 'stop' EXIT

# The first line a process prints on stdout (its URL), waited for up to 30 s.
first_line() {
  local file="$1" pid="$2"
  for _ in $(seq 1 300); do
    if [[ "$(wc -l <"$file")" -ge 1 ]]; then
      head -n 1 "$file"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# The Calendar emulator (dev mode: `Bearer dev:<email>` acts as that user, created on first use).
"$CONFSYNC_BIN" emulator --listen 127.0.0.1:0 >"$WORK/emulator.out" 2>"$WORK/emulator.log" &
EMULATOR_PID=$!
EMULATOR_URL="$(first_line "$WORK/emulator.out" "$EMULATOR_PID")" || fail "the emulator printed no URL: $(tail -n 20 "$WORK/emulator.log")"
[[ "$EMULATOR_URL" == http://127.0.0.1:* ]] || fail "unexpected emulator line: $EMULATOR_URL"

# A free loopback port for the service: push channels need its public URL before it starts.
PORT="$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT/"
CONFIG="$WORK/confsync.toml"
cat >"$CONFIG" <<EOF
[google]
base_url = "$EMULATOR_URL"
[store]
path = "$WORK/confsync.db"
[provider]
kind = "local"
join_base_url = "$BASE"
[serve]
listen = "127.0.0.1:$PORT"
public_url = "$BASE"
debounce_ms = 0
EOF

# An admin key: every route accepts it (the add-on's, the status and the admin tools).
KEY="$("$CONFSYNC_BIN" apikey create --config "$CONFIG" --name "schemathesis-admin-$$" --scope admin)"
[[ "$KEY" == cs_* ]] || fail "apikey create printed no key"

CONFSYNC_GOOGLE_TOKEN="dev:alice@example.com" "$CONFSYNC_BIN" serve --config "$CONFIG" >"$WORK/serve.out" 2>"$WORK/serve.log" &
SERVE_PID=$!
SERVING="$(first_line "$WORK/serve.out" "$SERVE_PID")" || fail "confsync serve did not start: $(tail -n 20 "$WORK/serve.log")"
[[ "$SERVING" == "confsync serving on $BASE" ]] || fail "unexpected serve line: $SERVING"

# Something to find: a conference on Alice's calendar (a link, a synced calendar, a push
# channel), so reads and admin calls reach their success paths, not only their 404s.
"$VENV/bin/python" - "$BASE" "$KEY" <<'EOF' || fail "seeding a conference failed"
import json, sys, urllib.request
base, key = sys.argv[1], sys.argv[2]
request = urllib.request.Request(
    base + "v1/conferences",
    data=json.dumps({"calendarId": "alice@example.com", "eventId": "abcdefgh01"}).encode(),
    headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"},
    method="POST",
)
with urllib.request.urlopen(request, timeout=30) as answer:
    conference = json.load(answer)
print("run.sh: seeded conference", conference["conferenceId"])
EOF

# The document as served is the repository's, and valid OpenAPI 3.1 (openapi-spec-validator).
"$VENV/bin/python" - "$BASE" "$ROOT/crates/service/openapi.json" "$WORK/openapi.json" <<'EOF' || fail "the served document differs from crates/service/openapi.json"
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "v1/openapi.json", timeout=30) as answer:
    served = answer.read()
    assert answer.headers.get_content_type() == "application/json", answer.headers
open(sys.argv[3], "wb").write(served)
sys.exit(0 if served == open(sys.argv[2], "rb").read() else 1)
EOF
"$VENV/bin/openapi-spec-validator" "$WORK/openapi.json" || fail "openapi.json is not valid OpenAPI"

# Two passes: everything but the key revocation, then the revocation alone (Schemathesis learns
# key names from GET /v1/admin/keys and would otherwise revoke its own key midway).
rc=0
schemathesis_pass() {
  local name="$1"
  shift
  mkdir -p "$REPORTS/$name"
  # From the temp dir: Schemathesis keeps a cache (.schemathesis/) in its working directory,
  # which stays out of the repository and does not carry over between runs.
  (cd "$WORK" && "$VENV/bin/schemathesis" run "${BASE}v1/openapi.json" \
    --url "$BASE" \
    --header "Authorization: Bearer $KEY" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-examples "${API_MAX_EXAMPLES:-100}" \
    --seed "${API_SEED:-20261204}" \
    --workers 2 \
    --request-timeout 40 \
    --no-color \
    --report json,junit \
    --report-dir "$REPORTS/$name" \
    "$@") || rc=$?
}
# The stateful phase follows the document's links (a created conference read back, a listed
# action retried or dropped); the revocation pass has none to follow.
schemathesis_pass main --phases examples,coverage,fuzzing,stateful --exclude-operation-id revokeKey "${@}"
schemathesis_pass revoke --phases examples,coverage,fuzzing --include-operation-id revokeKey "${@}"

# "No tests ran" is a failure: every documented operation must have been tested, with cases.
"$VENV/bin/python" - "$REPORTS" "$ROOT/crates/service/openapi.json" <<'EOF' || { [[ $rc -ne 0 ]] || rc=1; }
import glob, json, sys
document = json.load(open(sys.argv[2]))
# Schemathesis leaves out the operation serving the document it loaded (GET /v1/openapi.json),
# which is checked above.
documented = sum(
    1
    for path, item in document["paths"].items()
    for m in item
    if m in ("get", "post", "put", "patch", "delete") and path != "/v1/openapi.json"
)
generated = tested = 0
for name in ("main", "revoke"):
    reports = sorted(glob.glob(f"{sys.argv[1]}/{name}/json-*.json"))
    if not reports:
        sys.exit(f"run.sh: Schemathesis wrote no report for its {name} pass")
    report = json.load(open(reports[-1]))
    generated += report["test_cases"]["generated"]
    tested += report["operations"]["tested"]
    if report["operations"]["tested"] != report["operations"]["selected"]:
        sys.exit(f"run.sh: {name} pass: not every selected operation was tested: {report['operations']}")
print(f"run.sh: {generated} test cases over {tested} of {documented} documented operations")
if generated == 0:
    sys.exit("run.sh: no test case ran")
if tested < documented:
    sys.exit(f"run.sh: only {tested} of {documented} operations were tested")
EOF

if [[ $rc -ne 0 ]]; then
  echo "run.sh: Schemathesis found failures (exit $rc); logs: $WORK/serve.log, reports: $REPORTS" >&2
  tail -n 40 "$WORK/serve.log" >&2 || true
  stop
  exit "$rc"
fi
stop
rm -rf "$WORK"
