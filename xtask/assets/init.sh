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

# keel.check.loop=N on the kernel command line: iterations of each CPU's loop in the checks below.
LOOPS=50000

# keel.init=checks: the guest-visible facts the boot tests assert, one `KEEL-CHECK:` line each (the host
# timestamps the sleep lines as they arrive), then power off.
checks() {
    echo "KEEL-CHECK: hypervisor-type $(cat /sys/hypervisor/type 2>/dev/null || echo none)"
    ncpu=$(nproc)
    echo "KEEL-CHECK: nproc $ncpu"
    # One CPU-bound loop pinned to each CPU, all at once.
    n=0
    while [ "$n" -lt "$ncpu" ]; do
        taskset -c "$n" sh -c 'i=0; while [ $i -lt '"$LOOPS"' ]; do i=$((i + 1)); done' &&
            echo "KEEL-CHECK: cpu $n loop done" &
        n=$((n + 1))
    done
    wait
    # /proc/stat: cpu user nice system idle iowait irq softirq steal ...
    echo "KEEL-CHECK: steal $(awk '$1 == "cpu" { print $9 }' /proc/stat)"
    echo "KEEL-CHECK: date $(date +%s)"
    # Diagnostics for the clock checks: the wall clock to the microsecond, and /proc/uptime (the monotonic
    # clock) in a kernel-log line, whose [timestamp] is the kernel's sched_clock.
    echo "KEEL-CHECK: wallclock $(adjtimex | awk '/tv_sec/ { s = $2 } /tv_usec/ { u = $2 } END { printf "%d.%06d", s, u }')"
    echo "KEEL-CHECK: kmsg-uptime $(cut -d ' ' -f 1 /proc/uptime)" >/dev/kmsg
    echo "KEEL-CHECK: sleep-start"
    sleep 5
    echo "KEEL-CHECK: sleep-end"
    if [ -e /proc/xen/capabilities ] || [ -e /proc/xen/privcmd ] || [ -e /proc/xen/xenbus ]; then
        echo "KEEL-CHECK: xenfs mounted"
    else
        echo "KEEL-CHECK: xenfs not mounted"
    fi
    warnings=$(dmesg | grep -c -i -E "clocksource.*unstable|tsc.*unstable|clocksource.*skew")
    echo "KEEL-CHECK: clock-warnings ${warnings:-0}"
    echo "KEEL-CHECK: done"
}

# keel.init=poweroff on the kernel command line: stop here (for tests); keel.init=checks: run the checks
# above, then stop; keel.init=bench: time null hypercalls, then stop; keel.init=reboot: reboot the machine;
# otherwise a shell.
cmdline=" $(cat /proc/cmdline) "
case "$cmdline" in
*" keel.check.loop="*)
    LOOPS=${cmdline##* keel.check.loop=}
    LOOPS=${LOOPS%% *}
    ;;
esac
case "$cmdline" in
*" keel.init=poweroff "*)
    echo "KEEL-INIT: powering off"
    poweroff -f
    ;;
*" keel.init=checks "*)
    checks
    echo "KEEL-INIT: powering off"
    poweroff -f
    ;;
*" keel.init=bench "*)
    # `cargo xtask bench --vs-xen`: null-hypercall round trips (/bin/hcbench: privcmd and /sys/hypervisor, when the
    # initramfs carries it; keel.bench.calls=N sets the count), then power off.
    calls=20000
    case "$cmdline" in
    *" keel.bench.calls="*)
        calls=${cmdline##* keel.bench.calls=}
        calls=${calls%% *}
        ;;
    esac
    if [ -x /bin/hcbench ]; then
        /bin/hcbench "$calls"
    else
        echo "KEEL-BENCH: hypercall failed: no /bin/hcbench in this initramfs"
    fi
    echo "KEEL-INIT: powering off"
    poweroff -f
    ;;
*" keel.init=reboot "*)
    echo "KEEL-INIT: rebooting"
    reboot -f
    ;;
esac
echo "KEEL-INIT: starting a shell"
exec setsid cttyhack sh
