#!/usr/bin/env bash
# Make sure Debian's Chromium is there for the real-browser test (tests/test_browser.py), the one place that knows
# how to get it: `make test` and .ci/run both call this script.
#
#   scripts/ensure_chromium.sh      nothing to do when /usr/bin/chromium exists; otherwise, as root with apt-get
#                                   (CI, a fresh container), install it (about 15 s); otherwise stop with exit
#                                   status 2 and the command to run.
#
# For tests of this script: CHROMIUM (default /usr/bin/chromium) is the path checked, APT_GET (default apt-get) the
# installer, EUID_OVERRIDE stands in for the user id.
set -euo pipefail

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
APT_GET="${APT_GET:-apt-get}"
uid="${EUID_OVERRIDE:-$(id -u)}"
INSTALL="apt-get update && apt-get install -y --no-install-recommends chromium"

if [ -x "$CHROMIUM" ]; then
    exit 0
fi

if [ "$uid" = 0 ] && command -v "$APT_GET" >/dev/null 2>&1; then
    echo "installing Debian's chromium for tests/test_browser.py (about 15 s): $INSTALL"
    if ! { "$APT_GET" update && DEBIAN_FRONTEND=noninteractive "$APT_GET" install -y --no-install-recommends chromium; }
    then
        echo "error: could not install chromium with apt-get; tests/test_browser.py needs $CHROMIUM." >&2
        echo "       Install it yourself, or run the other checks without it: make test BROWSER=skip" >&2
        exit 1
    fi
    if [ ! -x "$CHROMIUM" ]; then
        echo "error: apt-get installed chromium but $CHROMIUM is missing" >&2
        exit 1
    fi
    exit 0
fi

{
    echo "error: the browser test (tests/test_browser.py) needs Debian's Chromium at $CHROMIUM, which is missing."
    if [ "$uid" = 0 ]; then
        echo "apt-get is not available here to install it (not Debian/Ubuntu?): install Chromium with the system's"
        echo "package manager so that $CHROMIUM exists, then run make test again."
    else
        echo "Installing it needs root; run:"
        echo
        echo "    sudo sh -c '$INSTALL'"
        echo
        echo "then make test again."
    fi
    echo "Or run every other check and skip the browser test:"
    echo
    echo "    make test BROWSER=skip"
} >&2
exit 2
