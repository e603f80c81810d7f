#!/usr/bin/env bash
# The browser tests drive a real headless Chromium (test/helpers/browser.ts looks at $CHROMIUM_PATH, then
# /usr/bin/chromium and a few usual places). Install Debian's `chromium` with apt-get when none is there
# and we may (root or sudo); otherwise say how. --no-install-recommends: ~20 packages instead of ~130,
# and headless Chromium needs none of the rest (about 15 s on a fresh machine instead of 25 s).
if [ -n "${CHROMIUM_PATH:-}" ] && [ -x "$CHROMIUM_PATH" ]; then exit 0; fi
for candidate in /usr/bin/chromium /usr/lib/chromium/chromium /usr/bin/chromium-browser /usr/bin/google-chrome-stable /usr/bin/google-chrome; do
  [ -x "$candidate" ] && exit 0
done
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else SUDO=none; fi
if [ "$SUDO" != none ] && command -v apt-get >/dev/null 2>&1; then
  echo "chromium not found: installing it with apt-get (the browser tests drive a real headless one)" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null && exit 0
fi
echo "chromium is required by the browser tests: install it (apt-get install chromium) or set CHROMIUM_PATH to a Chromium or Chrome executable, and retry" >&2
exit 1
