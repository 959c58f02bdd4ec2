#!/bin/busybox sh
# /init of the ntpd-py test guest (runs from the initramfs built by tests/vm/harness.py).
#
# Mounts the host's root file system read-only over 9p, puts tmpfs where a
# system needs to write, mounts the run directory (shared writable) over the
# same path, runs <run dir>/guest.sh chrooted in the host's files, writes its
# exit status to <run dir>/rc and powers off. The run directory comes from the
# kernel command line (ntpdpy.run=DIR).
/bin/busybox mkdir -p /bin /proc /sys /dev /mnt
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo 1 > /proc/sys/kernel/printk

fail() {
    echo "ntpd-py-vm: $*" > /dev/console
    poweroff -f
}

for m in $(cat /modules.order); do
    insmod "/modules/$m.ko" || fail "insmod $m failed"
done

run=""
stage=""
dpkg=""
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        ntpdpy.run=*) run="${arg#ntpdpy.run=}" ;;
        ntpdpy.systemd=*) stage="${arg#ntpdpy.systemd=}" ;;
        ntpdpy.dpkg=1) dpkg=1 ;;
    esac
done
[ -n "$run" ] || fail "no ntpdpy.run= on the kernel command line"

mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /mnt \
    || fail "cannot mount the host root over 9p"
mount -t 9p -o trans=virtio,version=9p2000.L,rw,msize=262144 rundir "/mnt$run" \
    || fail "cannot mount the run directory over 9p"
mount -t proc proc /mnt/proc
mount -t sysfs sys /mnt/sys
mount -t devtmpfs dev /mnt/dev
mkdir -p /mnt/dev/pts /mnt/dev/shm
mount -t devpts devpts /mnt/dev/pts
mount -t tmpfs shm /mnt/dev/shm
# A checkout under /tmp, /run or /var/tmp (a CI clone, say) would vanish under the
# guest's tmpfs there: keep the host's view of it (and the run directory in it).
repo="${run%%/tests/vm/.cache*}"
held=""
case "$repo" in
    /tmp/*|/run/*|/var/tmp/*)
        mkdir -p /hold
        mount -o rbind "/mnt$repo" /hold || fail "cannot hold $repo"
        held=1 ;;
esac
mount -t tmpfs tmp /mnt/tmp
mount -t tmpfs run /mnt/run
[ -d /mnt/var/tmp ] && mount -t tmpfs vartmp /mnt/var/tmp
if [ -n "$held" ]; then
    mkdir -p "/mnt$repo"
    mount -o rbind /hold "/mnt$repo" || fail "cannot put $repo back"
fi

if [ -n "$stage" ]; then
    echo "ntpd-py-vm: systemd mode, stage $stage" > /dev/console
    # Boot systemd as PID 1 on the host's files (tests/deploy): writable tmpfs
    # copies where a running system writes (/etc, /var), and the staged install
    # (a DESTDIR from deploy/install.sh, in $stage/root) laid over /opt,
    # /usr/local/bin, /usr/local/lib and /etc; test units from $stage/units go
    # to /run/systemd/system, udev rules from $stage/udev to /run/udev/rules.d.
    # The test unit reports and powers off.
    mkdir -p /orig
    mount --bind /mnt/etc /orig
    mount -t tmpfs etc /mnt/etc
    cp -a /orig/. /mnt/etc/
    umount /orig
    : > /mnt/etc/fstab
    if [ -n "$dpkg" ]; then
        # ntpdpy.dpkg=1 (tests/deploy/test_deb_guest.py): a package manager that works.
        # dpkg needs its database (copied, as /etc is) and a writable /usr: the host's
        # /usr under a tmpfs overlay, so what the package installs vanishes at power-off.
        mkdir -p /orig /dpkg
        mount --bind /mnt/var/lib/dpkg /orig
        cp -a /orig/. /dpkg/
        umount /orig
        insmod "/mnt/lib/modules/$(uname -r)/kernel/fs/overlayfs/overlay.ko" \
            || fail "cannot load overlay.ko"
        mkdir -p /mnt/run/ntpdpy-usr/upper /mnt/run/ntpdpy-usr/work
        mount -t overlay usr -o lowerdir=/mnt/usr,upperdir=/mnt/run/ntpdpy-usr/upper,workdir=/mnt/run/ntpdpy-usr/work /mnt/usr \
            || fail "cannot lay an overlay over /usr"
    fi
    mount -t tmpfs var /mnt/var
    mkdir -p /mnt/var/lib /mnt/var/log /mnt/var/cache /mnt/var/spool /mnt/var/tmp
    ln -s /run /mnt/var/run
    if [ -n "$dpkg" ]; then
        cp -a /dpkg /mnt/var/lib/dpkg
        rm -rf /dpkg
        mkdir -p /mnt/var/cache/debconf /mnt/var/log/apt
    fi
    ln -s /run/lock /mnt/var/lock
    for dir in opt usr/local/bin usr/local/lib; do
        mount -t tmpfs staged "/mnt/$dir"
        [ -d "/mnt$stage/root/$dir" ] && cp -a "/mnt$stage/root/$dir/." "/mnt/$dir/"
    done
    cp -a "/mnt$stage/root/etc/." /mnt/etc/
    mkdir -p /mnt/run/systemd/system /mnt/run/udev/rules.d
    cp "/mnt$stage/units/"* /mnt/run/systemd/system/
    [ -d "/mnt$stage/udev" ] && cp "/mnt$stage/udev/"* /mnt/run/udev/rules.d/
    echo "@@ntpd-py-vm start@@" > /dev/console
    # The host's files may carry a container marker (/.dockerenv): as PID 1,
    # systemd takes an empty $container as "not in a container" and then reads
    # the kernel command line (systemd.unit=...) as on any machine.
    export container=
    exec switch_root -c /dev/console /mnt /lib/systemd/systemd
fi

echo "@@ntpd-py-vm start@@" > /dev/console
chroot /mnt /bin/sh "$run/guest.sh" < /dev/null > /dev/console 2>&1
rc=$?
echo "$rc" > "/mnt$run/rc"
sync
echo "@@ntpd-py-vm end rc=$rc@@" > /dev/console
umount "/mnt$run"
poweroff -f
