#!/usr/bin/env bash
# The tests start a real redis-server. Install it with apt-get when it is missing and we may (root or
# sudo); otherwise say how.
command -v redis-server >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else SUDO=none; fi
if [ "$SUDO" != none ] && command -v apt-get >/dev/null 2>&1; then
  echo "redis-server not found: installing it with apt-get (the tests start a real one)" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq redis-server >/dev/null && exit 0
fi
echo "redis-server is required by the tests: install it (apt-get install redis-server, brew install redis) and retry" >&2
exit 1
