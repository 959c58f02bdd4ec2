#!/usr/bin/env bash
# Set up everything the test suite needs on a Debian 12 machine, then run the
# whole suite with CAP_SYS_TIME removed from the bounding set, so that no test,
# however wrong, can change the clock of the machine it runs on.
#
#   bash tests/run.sh [pytest arguments]
#
# .ci/run runs exactly this. Root is needed to install Debian packages and for
# the tests that use network namespaces, privilege dropping and QEMU guests;
# root keeps every other capability. Started as another user, the script runs
# itself again through sudo (so the same command works as root, where there may
# be no sudo at all, and as a user with sudo rights).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        echo "tests/run.sh: not root; running again as root through sudo (it installs" \
             "Debian packages and some tests need root; CAP_SYS_TIME is dropped before" \
             "any test runs)" >&2
        # sudo resets the environment: carry the suite's own NTPDPY_* settings over.
        mapfile -t keep < <(env | grep '^NTPDPY_' || true)
        exec sudo env "${keep[@]}" bash "$PWD/tests/run.sh" "$@"
    fi
    echo "tests/run.sh: needs root (it installs Debian packages and some tests need root;" \
         "CAP_SYS_TIME is dropped before any test runs), and sudo is not installed:" \
         "run it as root, e.g. su -c 'bash tests/run.sh'" >&2
    exit 2
fi

# groff: tests/supervisor/test_manpages.py renders the man pages with groff -man.
# gpsd, gpsd-clients: tests/integration/test_pps_guest.py (gpsd feeding a sock source).
# gcc, libssl-dev: the C NTS engine (workers/_nts_fast.c), built by the pip install below.
DEBS=(chrony linuxptp ntpsec-ntpdig sntp libcap2-bin iproute2 tmux busybox-static gcc libssl-dev
      linux-image-amd64 python3-venv libseccomp2 gdb groff-base man-db lintian
      gpsd gpsd-clients)

apt_install() {
    # Never let a package start its service: a chronyd started by apt would
    # steer this machine's clock.
    local made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
    if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
}

missing=()
for deb in "${DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$deb" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$deb")
done
qemu_major=$(qemu-system-x86_64 --version 2>/dev/null | sed -n 's/^QEMU emulator version \([0-9]*\).*/\1/p' || true)
need_qemu=0
if [ -z "$qemu_major" ] || [ "$qemu_major" -lt 8 ]; then need_qemu=1; fi

if [ "${#missing[@]}" -gt 0 ] || [ "$need_qemu" = 1 ]; then
    if [ "$need_qemu" = 1 ]; then
        # The emulated igb NIC (a real, ticking PHC) needs QEMU >= 8: Debian 12
        # has it in bookworm-backports. Use the machine's own Debian mirror.
        . /etc/os-release
        mirror=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' \
                 | grep -v security | head -n1 || true)
        if [ -z "$mirror" ]; then
            mirror=$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' \
                     | grep -v security | head -n1 || true)
        fi
        if [ -z "$mirror" ]; then
            echo "tests/run.sh: cannot find this machine's Debian mirror to add" \
                 "${VERSION_CODENAME}-backports (for QEMU >= 8)" >&2
            exit 1
        fi
        printf 'Types: deb\nURIs: %s\nSuites: %s-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            "$mirror" "$VERSION_CODENAME" > /etc/apt/sources.list.d/ntpd-py-backports.sources
    fi
    apt-get update -q
    if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
    if [ "$need_qemu" = 1 ]; then
        apt_install -t "${VERSION_CODENAME}-backports" qemu-system-x86
    fi
fi

# tests/vm/harness.py installs the guest's packages through this script (and stops here).
if [ "${NTPDPY_DEPS_ONLY:-}" = 1 ]; then exit 0; fi

if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test,plot]'

# One process on purpose: with two pytest-xdist workers (tried 2026-12-04) the QEMU TCG
# guests slowed down as much as the rest sped up (1226 s against 1248 s) and the e2e guest's
# PHC reader starved. The 15 slowest tests are listed at the end of each run.
set +e
capsh --drop=cap_sys_time -- -c 'exec .venv/bin/python -m pytest "$@"' pytest --durations=15 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "tests/run.sh: pytest collected no tests; that is a failure, not a pass" >&2
    exit 1
fi
exit "$rc"
