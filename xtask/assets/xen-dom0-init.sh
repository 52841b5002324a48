#!/bin/sh
# /xen-init of the Xen dom0 initramfs for `cargo xtask bench --vs-xen` (xtask/assets/xen-dom0-init.sh): brings up
# Xen's toolstack in Debian's PV dom0 (Xen 4.17), creates the PVH domU of /etc/xen/domu.cfg with its console on
# this one, and powers off when the domU has gone. The host times the `XEN-DOM0:` lines as they arrive.
# Xen's own tools first: the base initramfs carries Keel's xenstored and xenstore-* too.
export PATH=/usr/lib/xen-4.17/bin:/bin:/sbin:/usr/bin:/usr/sbin
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu

mount -t devtmpfs devtmpfs /dev 2>/dev/null
[ -t 1 ] || exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
echo "XEN-DOM0: init reached"
cmdline=" $(cat /proc/cmdline) "
case "$cmdline" in
*" keel.bench.calls="*)
    calls=${cmdline##* keel.bench.calls=}
    calls=${calls%% *}
    ;;
esac

for m in xen-evtchn xen-privcmd xenfs xen-gntdev xen-gntalloc xen-blkback xen-netback loop llc stp bridge; do
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
mkdir -p /var/log/xen/console
xenconsoled --pid-file=/var/run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console ||
    echo "XEN-DOM0: xenconsoled failed"
# The bridge for devbench's domU, as on Keel's dom0 (xl runs the same /etc/xen/scripts).
/etc/xen/scripts/network-bridge start || echo "XEN-DOM0: no xenbr0"
echo "XEN-DOM0: toolstack up"
# RAM Xen keeps for itself: all of it, less what is free, less dom0's (MiB).
total=$(xl info | awk '$1 == "total_memory" { print $3 }')
free=$(xl info | awk '$1 == "free_memory" { print $3 }')
dom0=$(xl list 0 | awk 'NR == 2 { print $3 }')
echo "XEN-DOM0: memory total=$total free=$free dom0=$dom0"
# `xl list` and `xl info` wall times (xtask/assets/toolbench.sh), against `xm`'s on Keel.
/bin/toolbench xl

# The same null-hypercall loop in this PV dom0 (syscall-based hypercalls), for reference.
/bin/hcbench "${calls:-20000}"

# `xl create` → the domU's init and create/destroy cycles (xtask/assets/createbench.sh), against `xm create` on
# Keel: the same kernel and busybox initrd, as a PV domU (Xen 4.17's PVH domU does not boot under QEMU TCG).
/bin/createbench xl pv /domu/vmlinuz

# The domU's console comes here through xenconsoled and `xl create -c` (in the background). Its configuration
# preserves it when it stops, so that a domU which never reached its init can be examined: this loop polls its
# state every 2 s, and once it has shut down, reports xl's reason code, dumps its VMCB ('v' debug key: RIP,
# exit code) when its console log lacks the init marker, and destroys it, which ends `xl create -c`.
echo "XEN-DOM0: xl create"
xl create -c /etc/xen/domu.cfg &
xl_pid=$!
while kill -0 "$xl_pid" 2>/dev/null; do
    sleep 2
    # Name ID Mem VCPUs State Time(s) UUID Reason-Code ...
    set -- $(xl list -v bench 2>/dev/null | awk 'NR == 2 { print $5, $8 }')
    case "$1" in
    *s*)
        echo "XEN-DOM0: domU shut down, state $1, reason code $2 (0 poweroff, 1 reboot, 2 suspend, 3 crash)"
        if ! grep -q "KEEL-INIT: busybox init reached" /var/log/xen/console/guest-bench.log 2>/dev/null; then
            echo "XEN-DOM0: domU never reached its init; its VMCB:"
            xl debug-keys v
            sleep 1
        fi
        xl destroy bench
        ;;
    esac
done
wait "$xl_pid" && echo "XEN-DOM0: domU gone" || echo "XEN-DOM0: xl create failed"
echo "XEN-DOM0: powering off"
poweroff -f
