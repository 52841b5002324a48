#!/bin/sh
# /xen-init of the Xen dom0 initramfs for `cargo xtask bench --vs-xen` (xtask/assets/xen-dom0-init.sh): brings up
# Xen's toolstack in Debian's PV dom0 (Xen 4.17), creates the PVH domU of /etc/xen/domu.cfg with its console on
# this one, and powers off when the domU has gone. The host times the `XEN-DOM0:` lines as they arrive.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin:/usr/lib/xen-4.17/bin
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu

mount -t devtmpfs devtmpfs /dev 2>/dev/null
[ -t 1 ] || exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
echo "XEN-DOM0: init reached"

for m in xen-evtchn xen-privcmd xenfs xen-gntdev xen-gntalloc; do
    insmod "/lib/modules/$m.ko" || echo "XEN-DOM0: insmod $m failed"
done
mkdir -p /proc/xen
mount -t xenfs xenfs /proc/xen || echo "XEN-DOM0: cannot mount xenfs"
mkdir -p /var/run/xen /var/run/xenstored /var/lib/xen /var/lib/xenstored /var/log/xen /var/lock /run/xen

xenstored --pid-file=/var/run/xenstored.pid
i=0
while [ ! -S /var/run/xenstored/socket ] && [ "$i" -lt 300 ]; do
    sleep 0.1
    i=$((i + 1))
done
[ -S /var/run/xenstored/socket ] || echo "XEN-DOM0: no xenstored socket"
xen-init-dom0 || echo "XEN-DOM0: xen-init-dom0 failed"
xenconsoled --pid-file=/var/run/xenconsoled.pid || echo "XEN-DOM0: xenconsoled failed"
echo "XEN-DOM0: toolstack up"
# RAM Xen keeps for itself: all of it, less what is free, less dom0's (MiB).
total=$(xl info | awk '$1 == "total_memory" { print $3 }')
free=$(xl info | awk '$1 == "free_memory" { print $3 }')
dom0=$(xl list 0 | awk 'NR == 2 { print $3 }')
echo "XEN-DOM0: memory total=$total free=$free dom0=$dom0"

echo "XEN-DOM0: xl create"
if xl create -c /etc/xen/domu.cfg; then
    echo "XEN-DOM0: domU gone"
else
    echo "XEN-DOM0: xl create failed"
    xl dmesg | tail -n 30
fi
xl list
echo "XEN-DOM0: powering off"
poweroff -f
