#!/usr/bin/env bash
# Deploy the owdedup package to Apache OpenWhisk with wskdeploy (or remove it).
#
#   ./deploy.sh [--dry-run] [--no-kafka-feed] [undeploy]
#
#   --dry-run        print the plan: the zips that would be built, the entities wskdeploy
#                    would create (wskdeploy --preview: it reads the runtimes with GET
#                    <apihost>/, creates nothing) and what would be deleted; does none of it
#   --no-kafka-feed  leave out the Kafka feed trigger `image-uploaded` and its rule, for an
#                    OpenWhisk without the Kafka feed provider: uploads then reach the plain
#                    trigger `image-uploaded-webhook` through MinIO's webhook target
#                    (OWDEDUP_KAFKA and OWDEDUP_KAFKA_TOPIC are then not needed); a previous
#                    deployment's feed trigger and rule are deleted
#   undeploy         remove what the last deployment to this API host and namespace made
#                    (recorded in .owdedup/deployed/; no other flag needed)
#
# A thin wrapper: `owdedup deploy` / `owdedup undeploy` (lib/owdedup/deploy/command.py) do the
# work, with this folder as the project. The settings they read:
# OpenWhisk: OW_APIHOST, OW_AUTH (UUID:KEY) and OW_NAMESPACE (default _), else the APIHOST=,
# AUTH= and NAMESPACE= lines of $WSK_CONFIG_FILE or ~/.wskprops, as `wsk` keeps them.
# Services, bound as package inputs (the variables the owdedup CLI reads): OWDEDUP_STORE,
# OWDEDUP_STORE_ACCESS_KEY, OWDEDUP_STORE_SECRET_KEY, OWDEDUP_RECORDS, OWDEDUP_OUT_BUCKET,
# OWDEDUP_KAFKA, OWDEDUP_KAFKA_TOPIC; optional OWDEDUP_RECORDS_USERNAME/PASSWORD,
# OWDEDUP_SIZES, OWDEDUP_FORMAT, OWDEDUP_QUALITY.
# Tools: OWDEDUP_PYTHON (default .venv/bin/python, else python3) and WSKDEPLOY (default
# openwhisk-wskdeploy from the services cache, built there with Go when missing).
#
# Every missing setting is reported before anything is built or created. Credentials never
# appear on a command line or in the output: the key reaches wskdeploy in a 0600 wskprops
# file (--config), the services' keys through the environment (the manifest's $VAR inputs).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
  sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

command=deploy
options=()
feed=()
for arg in "$@"; do
  case $arg in
    --dry-run) options+=(--dry-run) ;;
    --no-kafka-feed) feed=(--no-kafka-feed) ;;
    undeploy) command=undeploy ;;
    -h | --help) usage; exit 0 ;;
    *) echo "deploy.sh: unknown argument '$arg'" >&2; usage >&2; exit 2 ;;
  esac
done
# undeploy reads what to remove from the record: --no-kafka-feed (as given by habit) is moot
if [[ $command == deploy ]]; then
  options+=("${feed[@]}" --command-name ./deploy.sh)
fi

if [[ -n ${OWDEDUP_PYTHON:-} ]]; then
  py=$OWDEDUP_PYTHON
elif [[ -x $here/.venv/bin/python ]]; then
  py=$here/.venv/bin/python
else
  py=python3
fi
if ! "$py" -c 'import owdedup.deploy.command' 2>/dev/null; then
  echo "deploy.sh: $py cannot import owdedup: run 'pip install -e .[cli]' in $here or set" \
       "OWDEDUP_PYTHON to a Python that has it" >&2
  exit 2
fi

exec "$py" -m owdedup "$command" --project "$here" "${options[@]}"
