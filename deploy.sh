#!/usr/bin/env bash
# Deploy the owdedup package to Apache OpenWhisk with wskdeploy (or remove it).
#
#   ./deploy.sh [--dry-run] [--no-kafka-feed] [undeploy]
#
#   --dry-run        print the zips that would be built and the entities wskdeploy would
#                    create (wskdeploy --preview: it reads the runtimes with GET <apihost>/,
#                    creates nothing); builds nothing
#   --no-kafka-feed  leave out the Kafka feed trigger `image-uploaded` and its rule, for an
#                    OpenWhisk without the Kafka feed provider: uploads then reach the plain
#                    trigger `image-uploaded-webhook` through MinIO's webhook target
#                    (OWDEDUP_KAFKA and OWDEDUP_KAFKA_TOPIC are then not needed)
#   undeploy         remove what the manifest deploys (give the same flags as for deploying)
#
# OpenWhisk: OW_APIHOST, OW_AUTH (UUID:KEY) and OW_NAMESPACE (default _), else the APIHOST=,
# AUTH= and NAMESPACE= lines of $WSK_CONFIG_FILE or ~/.wskprops, as `wsk` keeps them.
# Services, bound as package inputs (the variables the owdedup CLI reads): OWDEDUP_STORE,
# OWDEDUP_STORE_ACCESS_KEY, OWDEDUP_STORE_SECRET_KEY, OWDEDUP_RECORDS, OWDEDUP_OUT_BUCKET,
# OWDEDUP_KAFKA, OWDEDUP_KAFKA_TOPIC; optional OWDEDUP_RECORDS_USERNAME/PASSWORD,
# OWDEDUP_SIZES, OWDEDUP_FORMAT, OWDEDUP_QUALITY.
# Tools: OWDEDUP_PYTHON (default .venv/bin/python, else python3) and WSKDEPLOY (default
# openwhisk-wskdeploy from the services cache, built there with Go when missing).
#
# Every missing setting is reported before anything is built or created: wskdeploy itself
# would turn an unset $VAR into "" without a word. Credentials never appear on a command line
# or in this script's output: the key reaches wskdeploy in a 0600 wskprops file (--config),
# the services' keys through the environment (the manifest's $VAR inputs).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
  sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

dry_run=0
undeploy=0
feed=()
for arg in "$@"; do
  case $arg in
    --dry-run) dry_run=1 ;;
    --no-kafka-feed) feed=(--no-kafka-feed) ;;
    undeploy) undeploy=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "deploy.sh: unknown argument '$arg'" >&2; usage >&2; exit 2 ;;
  esac
done

if [[ -n ${OWDEDUP_PYTHON:-} ]]; then
  py=$OWDEDUP_PYTHON
elif [[ -x $here/.venv/bin/python ]]; then
  py=$here/.venv/bin/python
else
  py=python3
fi
if ! "$py" -c 'import owdedup.deploy.plan' 2>/dev/null; then
  echo "deploy.sh: $py cannot import owdedup: run 'pip install -e .[cli]' in $here or set" \
       "OWDEDUP_PYTHON to a Python that has it" >&2
  exit 2
fi

plan() { "$py" -m owdedup.deploy.plan "$@"; }
what=()
((undeploy)) && what=(--undeploy)

# 1. Every missing setting, and the wskdeploy to run (built with Go when missing, and a
#    failure reported, here), before any zip is built or anything created.
plan check "${feed[@]}" "${what[@]}"
wskdeploy=$(plan wskdeploy)

# 2. The action zips.
if ((!undeploy)); then
  if ((dry_run)); then
    echo "== zips that would be built (python -m owdedup.deploy --dry-run)"
    "$py" -m owdedup.deploy "$here/manifest.yaml" --dry-run
  else
    echo "== building the action zips"
    "$py" -m owdedup.deploy "$here/manifest.yaml"
  fi
fi

# 3. wskdeploy, on a private copy of what it reads (key file, manifest, zips).
stage=$(mktemp -d "${TMPDIR:-/tmp}/owdedup-deploy.XXXXXX")  # mode 0700
trap 'rm -rf "$stage"' EXIT
trap 'exit 130' INT  # exit through the EXIT trap: the key file never outlives the run
trap 'exit 143' TERM
placeholders=()
if ((dry_run || undeploy)); then
  placeholders=(--placeholders)  # --preview and undeploy read the zips but never send them
fi
manifest=$(plan stage --out "$stage" --project "$here" "${feed[@]}" "${what[@]}" \
  "${placeholders[@]}")

cmd=("$wskdeploy")
((undeploy)) && cmd+=(undeploy)
cmd+=(-m "$manifest" --config "$stage/wskprops")
for deployment in "$here/deployment.yaml" "$here/deployment.yml"; do
  if [[ -f $deployment ]]; then
    cmd+=(-d "$deployment")
    echo "using $deployment"
    break
  fi
done

if ((dry_run)); then
  cmd+=(--preview)
  echo "== what wskdeploy would $( ((undeploy)) && echo remove || echo deploy) (--preview)"
  # The preview prints every input's value: show the credentials as set, not what they are.
  for name in OWDEDUP_STORE_ACCESS_KEY OWDEDUP_STORE_SECRET_KEY OWDEDUP_RECORDS_USERNAME \
              OWDEDUP_RECORDS_PASSWORD; do
    if [[ -n ${!name:-} ]]; then
      export "$name=<set>"
    fi
  done
else
  echo "== wskdeploy$( ((undeploy)) && echo ' undeploy')"
fi

status=0
(cd "$stage" && "${cmd[@]}") || status=$?
if ((status != 0)); then
  if ((undeploy || dry_run)); then
    echo "deploy.sh: wskdeploy failed (exit $status)" >&2
  else
    echo "deploy.sh: wskdeploy failed (exit $status); entities created before the failure" \
         "stay: './deploy.sh ${feed[*]:+${feed[*]} }undeploy' removes them" >&2
  fi
  exit "$status"
fi
if ((dry_run)); then
  echo "dry run: nothing was built or created"
fi
