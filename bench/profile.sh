#!/usr/bin/env bash
# Where portcullis spends its time during fresh-token handshakes: runs it (pipe mode, pinned to core 0)
# under `node --cpu-prof` while the load generator (core 1) drives handshakes, then prints the top
# self-time functions and writes bench/results/profile.json (rendered into RESULTS.md by bench/render.mjs)
# and the raw bench/results/portcullis-handshake-fresh.cpuprofile. Needs `npm run build` first.
#   bash bench/profile.sh [--duration-ms 15000] [--top 15] [--scenario handshake-fresh|handshake-reused|handshake-rejected|echo-64]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f dist/cli.js ] || { echo "bench/profile.sh: dist/cli.js missing; run npm run build first" >&2; exit 1; }
exec node bench/profile.mjs "$@"
