#!/usr/bin/env bash
# Install owdedup and thumbnail the sample photos twice: the second run computes nothing.
# With --openwhisk, then deploy the package onto `owdedup serve` (a local OpenWhisk API) with
# wskdeploy and invoke it with the real `wsk` CLI: the photo is deduplicated against the
# records the local runs wrote (same store, same function identity). That part needs Go (to
# build wskdeploy and wsk once) and CPython 3.11 (the actions' runtime).
# Usage: bash examples/demo.sh [--openwhisk]
set -euo pipefail
openwhisk=0
case ${1:-} in
  --openwhisk) openwhisk=1 ;;
  "") ;;
  *) echo "usage: bash examples/demo.sh [--openwhisk]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."

if [[ ! -x .venv/bin/owdedup ]]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet '.[cli]'
fi

# The folder store is rooted at examples/: bucket "photos" is examples/photos, outputs go to
# examples/thumbs and records to examples/.owdedup/records.sqlite.
cd examples
rm -rf thumbs .owdedup
echo "== first run: every distinct photo is computed (rocket-copy.jpg is a duplicate)"
../.venv/bin/owdedup map thumbnail photos thumbs --size 64,256 --results first.jsonl
echo
echo "== second run: everything is deduplicated"
../.venv/bin/owdedup map thumbnail photos thumbs --size 64,256 --results second.jsonl
echo
../.venv/bin/owdedup stats

[[ $openwhisk == 1 ]] || exit 0

echo
echo "== through OpenWhisk's API: owdedup serve, wskdeploy, wsk"
py=$PWD/../.venv/bin/python
../.venv/bin/owdedup services install-tools
wsk=$("$py" -c 'from owdedup.services.config import ServicesConfig
from owdedup.services.wsk import wsk_path
print(wsk_path(ServicesConfig.from_env()))')
port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# The key stays off every command line: serve reads it from its environment, wsk from a
# 0600 properties file, deploy.sh from OW_AUTH.
key=$("$py" -c 'from owdedup.serve.server import generate_auth; print(generate_auth())')
work=$(mktemp -d)
trap 'kill "$serve_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
OWDEDUP_SERVE_AUTH=$key ../.venv/bin/owdedup serve --port "$port" 2>"$work/serve.log" &
serve_pid=$!
"$py" - "$port" <<'PY'
import sys, time, urllib.request
for _ in range(100):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/", timeout=2).read()
        break
    except OSError:
        time.sleep(0.2)
else:
    sys.exit("owdedup serve did not start")
PY
(umask 077 && printf 'APIHOST=http://127.0.0.1:%s\nAUTH=%s\n' "$port" "$key" >"$work/wskprops")
export WSK_CONFIG_FILE=$work/wskprops
OW_APIHOST=http://127.0.0.1:$port OW_AUTH=$key OWDEDUP_PYTHON=$py \
  OWDEDUP_STORE=file://$PWD OWDEDUP_RECORDS=sqlite://$PWD/.owdedup/records.sqlite \
  OWDEDUP_OUT_BUCKET=thumbs OWDEDUP_SIZES=64,256 \
  bash ../deploy.sh --no-kafka-feed
echo
echo "== wsk action invoke: rocket.jpg was computed by the first local run, so it is deduplicated"
"$wsk" action invoke owdedup/dedup-thumbnail -p bucket photos -p key rocket.jpg -r | tee "$work/result.json"
"$py" -c 'import json, sys; r = json.load(open(sys.argv[1])); print("status:", r["status"]); sys.exit(r["status"] != "deduplicated")' "$work/result.json"
echo
"$wsk" activation list --limit 5
