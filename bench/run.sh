#!/usr/bin/env bash
# The whole benchmark in one command (after `npm run build`):
#   bash bench/run.sh            # full run (~35 min): bench/results/run-<time>.json and bench/RESULTS.md
#   bash bench/run.sh --quick    # a few seconds per scenario: bench/results/quick.json
# Any other argument goes to bench/run.mjs (--peers, --scenarios, --rounds, --duration-ms, --out, --md, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f dist/cli.js ]; then
  echo "bench/run.sh: dist/cli.js missing; run npm run build first" >&2
  exit 1
fi
case " $* " in
  *" --quick "*|*" --no-setup "*) ;;
  *) bash bench/setup.sh || echo "bench/run.sh: setup incomplete; the missing peers are skipped" >&2 ;;
esac
# The runner pins itself to core 1 with the load generator and echo upstream; peers go to core 0.
exec node bench/run.mjs --no-setup "$@"
