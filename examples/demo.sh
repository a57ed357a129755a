#!/usr/bin/env bash
# Install owdedup and thumbnail the sample photos twice: the second run computes nothing.
# Usage: bash examples/demo.sh
set -euo pipefail
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
