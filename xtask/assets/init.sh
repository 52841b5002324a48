#!/bin/sh
# /init of Keel's test initramfs, written by `cargo xtask initramfs` (xtask/assets/init.sh).
# Boot tests wait for the KEEL-INIT marker line below; keep its text stable.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

mount -t devtmpfs devtmpfs /dev 2>/dev/null
# If the kernel found no /dev/console before devtmpfs was up, reopen it now.
[ -t 1 ] || exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts

echo "KEEL-INIT: busybox init reached"

# Xen driver modules, if this initramfs carries them (in dependency order).
for m in xen-evtchn xen-privcmd xenfs xen-gntdev xen-gntalloc xen-blkback xen-netback; do
    [ -f "/lib/modules/$m.ko" ] || continue
    if insmod "/lib/modules/$m.ko"; then
        echo "KEEL-INIT: insmod $m ok"
    else
        echo "KEEL-INIT: insmod $m failed"
    fi
done
if grep -q xenfs /proc/filesystems; then
    mkdir -p /proc/xen
    mount -t xenfs xenfs /proc/xen && echo "KEEL-INIT: xenfs mounted on /proc/xen"
fi

# keel.init=poweroff on the kernel command line: stop here (for tests); otherwise a shell.
case " $(cat /proc/cmdline) " in
*" keel.init=poweroff "*)
    echo "KEEL-INIT: powering off"
    poweroff -f
    ;;
esac
echo "KEEL-INIT: starting a shell"
exec setsid cttyhack sh
