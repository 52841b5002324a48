#!/bin/sh
# /init of Keel's dom0 initramfs, written by `cargo xtask initramfs` (xtask/assets/init.sh): the mounts every
# later step needs, the marker boot tests wait for, then busybox init, which runs /etc/init.d/rcS (each
# /etc/init.d/S??* in order) and a root shell on the console (/etc/inittab).
# Boot tests wait for the KEEL-INIT marker line below; keep its text stable.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

mount -t devtmpfs devtmpfs /dev 2>/dev/null
# If the kernel found no /dev/console before devtmpfs was up, reopen it now.
[ -t 1 ] || exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=0755 tmpfs /run

echo "KEEL-INIT: busybox init reached"
exec /sbin/init
