#!/usr/bin/env bash
# Install ntpd-py from this repository as a system service, or remove it.
#
#   sudo deploy/install.sh               install (or upgrade) and activate
#   sudo deploy/install.sh --uninstall   stop, disable and remove (keeps /etc/ntpd-py)
#   DESTDIR=/tmp/root deploy/install.sh  stage everything under /tmp/root (packaging,
#                                        tests): nothing is written outside it and
#                                        no service manager is asked anything
#
# What goes where (paths below DESTDIR):
#   /opt/ntpd-py/                      a dedicated virtualenv with ntpd-py and its
#                                      dependencies (built from this repository)
#   /usr/local/bin/{ntpd-py,ntpctl}    symlinks into it
#   /usr/local/lib/systemd/system/ntpd-py.service
#   /usr/local/lib/sysusers.d/ntpd-py.conf, /usr/local/lib/tmpfiles.d/ntpd-py.conf
#   /usr/local/share/man/man8/{ntpd-py,ntpctl}.8, /usr/local/share/man/man5/ntp.toml.5
#   /etc/ntpd-py/ntp.toml              example configuration, only if there is none
#   /opt/ntpd-py/share/                README, docs/, examples: configurations, udev rule
#                                      for PHCs, logrotate (not activated)
#
# Environment: DESTDIR (default: none), PYTHON (default /usr/bin/python3, >= 3.11),
# and pip's own variables (PIP_INDEX_URL, PIP_CACHE_DIR, ...) for the download.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
DESTDIR=${DESTDIR:-}
DESTDIR=${DESTDIR%/}
PYTHON=${PYTHON:-/usr/bin/python3}
VENV=/opt/ntpd-py
BINDIR=/usr/local/bin
LIBDIR=/usr/local/lib
MANDIR=/usr/local/share/man
CONFDIR=/etc/ntpd-py
MANIFEST=$VENV/share/install-manifest.txt

say() { printf 'ntpd-py install: %s\n' "$*"; }
die() { printf 'ntpd-py install: error: %s\n' "$*" >&2; exit 1; }

if [ -n "$DESTDIR" ]; then
    case "$DESTDIR" in /*) ;; *) die "DESTDIR must be an absolute path, not $DESTDIR" ;; esac
fi
live() { [ -z "$DESTDIR" ]; }              # installing into the running system
have_systemd() { live && [ -d /run/systemd/system ]; }

put() {  # put MODE SOURCE TARGET: install one file, record it in the manifest
    install -D -m "$1" "$2" "$DESTDIR$3"
    echo "$3" >> "$DESTDIR$MANIFEST.new"
}

install_all() {
    if live && [ "$(id -u)" -ne 0 ]; then die "run as root (or set DESTDIR to stage)"; fi
    "$PYTHON" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
        || die "$PYTHON is not Python >= 3.11 with the venv module (apt install python3-venv)"

    say "virtualenv $DESTDIR$VENV"
    mkdir -p "$DESTDIR$VENV/share"
    "$PYTHON" -m venv "$DESTDIR$VENV"
    # Building from a copy keeps the repository clean (no build/ or egg-info left behind).
    local src
    src=$(mktemp -d)
    trap 'rm -rf "$src"' RETURN
    tar -C "$REPO" --exclude=.venv --exclude=.git --exclude='tests/vm/.cache' \
        --exclude='*.egg-info' --exclude=build -cf - . | tar -C "$src" -xf -
    "$DESTDIR$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --no-compile --upgrade "$src"
    if [ -n "$DESTDIR" ]; then
        # A virtualenv records its own path: make it the final one, not the staging one.
        grep -rlI --null -F "$DESTDIR$VENV" "$DESTDIR$VENV/bin" "$DESTDIR$VENV/pyvenv.cfg" \
            | xargs -0 -r sed -i "s|$DESTDIR$VENV|$VENV|g"
    fi
    # Byte-compile now (root-owned, read-only later), with the final paths in tracebacks.
    "$DESTDIR$VENV/bin/python" -m compileall -q -f -j 0 ${DESTDIR:+-s "$DESTDIR" -p /} \
        "$DESTDIR$VENV/lib" >/dev/null

    : > "$DESTDIR$MANIFEST.new"
    mkdir -p "$DESTDIR$BINDIR"
    for cmd in ntpd-py ntpctl; do
        local link=$DESTDIR$BINDIR/$cmd
        if [ -e "$link" ] && [ ! -L "$link" ]; then
            die "$BINDIR/$cmd exists and is not a symlink; not replacing it"
        fi
        ln -sfn "$VENV/bin/$cmd" "$link"
        echo "$BINDIR/$cmd" >> "$DESTDIR$MANIFEST.new"
    done
    put 0644 "$REPO/deploy/systemd/ntpd-py.service" "$LIBDIR/systemd/system/ntpd-py.service"
    put 0644 "$REPO/deploy/sysusers.d/ntpd-py.conf" "$LIBDIR/sysusers.d/ntpd-py.conf"
    put 0644 "$REPO/deploy/tmpfiles.d/ntpd-py.conf" "$LIBDIR/tmpfiles.d/ntpd-py.conf"
    put 0644 "$REPO/README.md" "$VENV/share/README.md"
    for doc in "$REPO"/docs/*.md; do
        put 0644 "$doc" "$VENV/share/doc/$(basename "$doc")"
    done
    # The man pages are generated from the installed code (CLI and configuration model).
    local man
    man=$(mktemp -d)
    "$DESTDIR$VENV/bin/python" -m ntpd_py.supervisor.manpages --out "$man" >/dev/null
    for page in man8/ntpd-py.8 man8/ntpctl.8 man5/ntp.toml.5; do
        put 0644 "$man/$page" "$MANDIR/$page"
    done
    rm -rf "$man"
    put 0644 "$REPO/deploy/udev/60-ntpd-py-phc.rules" "$VENV/share/udev/60-ntpd-py-phc.rules"
    put 0644 "$REPO/deploy/logrotate/ntpd-py" "$VENV/share/logrotate/ntpd-py"
    for example in "$REPO"/deploy/examples/*.toml; do
        put 0644 "$example" "$VENV/share/examples/$(basename "$example")"
    done
    if [ -e "$DESTDIR$CONFDIR/ntp.toml" ]; then
        say "keeping the existing $CONFDIR/ntp.toml"
    else
        install -D -m 0644 "$REPO/deploy/examples/ntp.toml" "$DESTDIR$CONFDIR/ntp.toml"
        say "installed an example $CONFDIR/ntp.toml (public NTP pool): edit it"
    fi
    mv "$DESTDIR$MANIFEST.new" "$DESTDIR$MANIFEST"

    if have_systemd; then
        systemd-sysusers ntpd-py.conf
        systemd-tmpfiles --create ntpd-py.conf
        systemctl daemon-reload
        say "installed; check the configuration, then: systemctl enable --now ntpd-py"
        say "(it stops chrony/systemd-timesyncd/ntpd/ntpd-rs: Conflicts= in the unit)"
    elif live; then
        say "installed; no systemd here: create the user with" \
            "'useradd --system --no-create-home --shell /usr/sbin/nologin ntpd-py'" \
            "and run '$BINDIR/ntpd-py run' as root"
    else
        say "staged under $DESTDIR"
    fi
}

uninstall_all() {
    if live && [ "$(id -u)" -ne 0 ]; then die "run as root (or set DESTDIR)"; fi
    if have_systemd; then
        systemctl disable --now ntpd-py.service 2>/dev/null || true
    fi
    if [ -f "$DESTDIR$MANIFEST" ]; then
        while IFS= read -r path; do
            case "$path" in
                "$BINDIR"/*)  # only our own symlinks
                    [ "$(readlink "$DESTDIR$path" 2>/dev/null)" = "$VENV/bin/${path##*/}" ] \
                        && rm -f "$DESTDIR$path" ;;
                /*) rm -f "$DESTDIR$path" ;;
            esac
        done < "$DESTDIR$MANIFEST"
    fi
    rm -rf "$DESTDIR$VENV"
    for dir in "$LIBDIR/systemd/system" "$LIBDIR/systemd" "$LIBDIR/sysusers.d" \
               "$LIBDIR/tmpfiles.d"; do
        rmdir "$DESTDIR$dir" 2>/dev/null || true  # only if it became empty
    done
    if have_systemd; then systemctl daemon-reload; fi
    say "removed; kept $CONFDIR (your configuration), /var/lib/ntpd-py (drift)" \
        "and the ntpd-py user"
}

case "${1:-}" in
    "") install_all ;;
    --uninstall) uninstall_all ;;
    -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
    *) die "unknown argument ${1} (try --help)" ;;
esac
