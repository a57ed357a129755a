#!/usr/bin/env bash
# Deploy the owdedup package to Apache OpenWhisk with wskdeploy.
#
# NOT IMPLEMENTED YET: building the per-action zips (build/actions/*.zip) and running
# wskdeploy arrive with the packaging issue. Until then the same sequences run locally:
#   owdedup invoke thumbnail BUCKET/KEY DEST_BUCKET
#   owdedup map thumbnail BUCKET DEST_BUCKET
set -euo pipefail
echo "deploy.sh: not implemented yet (see the README, 'Deploying to OpenWhisk')" >&2
exit 2
