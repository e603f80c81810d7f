#!/usr/bin/env bash
# Installs what the benchmark needs and is missing: nginx and HAProxy 2.6 (Debian packages, for their
# binaries only: the bench starts its own instances with its own configs, never the system services).
# The hand-written baseline's dependencies (http-proxy 1.18.1, jsonwebtoken) are devDependencies already.
# Exit 0 when everything is there; otherwise say what is missing (the runner then skips those peers).
set -u
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else SUDO=none; fi
  if [ "$SUDO" = none ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "bench/setup.sh: missing ${missing[*]}; install them (apt-get install ${missing[*]}) or those peers are skipped" >&2
    exit 1
  fi
  echo "bench/setup.sh: installing ${missing[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  # policy-rc.d 101: do not start the packaged services (the bench runs its own instances).
  policy=/usr/sbin/policy-rc.d; created_policy=0
  if [ ! -e "$policy" ] && [ -z "$SUDO" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created_policy=1; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  rc=$?
  [ "$created_policy" = 1 ] && rm -f "$policy"
  [ $rc = 0 ] || { echo "bench/setup.sh: apt-get failed ($rc)" >&2; exit 1; }
fi
# HAProxy must be >= 2.5 for jwt_verify (bookworm ships 2.6).
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
if ! "$HAPROXY" -vv 2>/dev/null | head -1 | grep -Eq 'version (2\.[5-9]|[3-9]\.)'; then
  echo "bench/setup.sh: $("$HAPROXY" -v 2>&1 | head -1) has no jwt_verify (needs >= 2.5); the haproxy peer is skipped" >&2
fi
exit 0
