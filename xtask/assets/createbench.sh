#!/bin/sh
# /bin/createbench (xtask/assets/createbench.sh), for `cargo xtask bench` (Keel alone) and `--vs-xen` (both sides):
# how long the toolstack in dom0 takes to start a domU and to create and destroy one.
#   createbench <tool> <type> <kernel> [cycles]
# Keel: `createbench xm pvh /usr/lib/keel/vmlinuz` (S99keel's bench modes); Xen: `createbench xl pv /domu/vmlinuz`
# (/xen-init: Xen 4.17's PVH domU does not boot under QEMU TCG, its PV domU does). Both boot the same kernel with the
# same busybox initrd, made here by 0domu.sh's domu_initrd (its init prints `KEEL-DOMU: init reached, <n> cpus` on
# hvc0), as a 256 MiB, 2-vCPU domU with `extra = "console=hvc0"`; xenconsoled (--log=guest) records its console in
# /var/log/xen/console/guest-NAME.log. Times are dom0's wall clock in ms (adjtimex; /proc/uptime's 10 ms when it
# is missing). Lines:
#   KEEL-BENCH: create tool=<tool> type=<type> ms=<create issued → init line in the log> cmd_ms=<create's own time>
#       destroy_ms=<destroy of the booted domU> status=0
#   KEEL-BENCH: cycle tool=<tool> type=<type> runs=<n> ms=<create+destroy, per cycle> create_ms=<…> destroy_ms=<…>
#       status=0
# or `KEEL-BENCH: create failed: <why>` / `KEEL-BENCH: cycle failed: <why>`. The cycles create and destroy at once,
# without waiting for the guest to boot. Outside a control domain (Xen's domU boots the same initramfs) it does
# nothing.
grep -q control_d /proc/xen/capabilities 2>/dev/null || exit 0
tool=$1
type=$2
kernel=$3
cycles=${4:-3}
case "$tool:$type" in
xm:* | xl:*) ;;
*)
    echo "KEEL-BENCH: create failed: usage: createbench <xm|xl> <pvh|pv> <kernel> [cycles]"
    exit 1
    ;;
esac
if [ ! -f "$kernel" ]; then
    echo "KEEL-BENCH: create failed: no domU kernel $kernel in this initramfs"
    exit 1
fi
. /etc/keel/checks.d/0domu.sh
domu_initrd
# How long to wait for the init line (Xen's libxl unpacks the XZ kernel in dom0 user space first).
WAIT_SECS=300

# Wall-clock ms. adjtimex prints time.tv_usec in ns when the kernel's status has STA_NANO (0x2000).
now_ms() {
    if adj=$(adjtimex 2>/dev/null); then
        sec=
        frac=
        st=0
        prev=
        for w in $adj; do
            case "$prev" in
            time.tv_sec:) sec=$w ;;
            time.tv_usec:) frac=$w ;;
            status:) st=$w ;;
            esac
            prev=$w
        done
        if [ -n "$sec" ] && [ -n "$frac" ]; then
            if [ $((st & 8192)) -ne 0 ]; then
                echo $((sec * 1000 + frac / 1000000))
            else
                echo $((sec * 1000 + frac / 1000))
            fi
            return
        fi
    fi
    read -r up _ </proc/uptime
    echo $((${up%.*} * 1000 + (1${up#*.} - 100) * 10))
}

# cfg NAME: writes /tmp/NAME.cfg and prints its path.
cfg() {
    cat >"/tmp/$1.cfg" <<EOF
name = "$1"
type = "$type"
kernel = "$kernel"
ramdisk = "$DOMU_INITRD"
extra = "console=hvc0"
memory = 256
vcpus = 2
EOF
    echo "/tmp/$1.cfg"
}

# create → init: once, the domU left to boot.
name=createbench
log=$(domu_log $name)
rm -f "$log"
c=$(cfg $name)
t0=$(now_ms)
out=$($tool create "$c" 2>&1)
status=$?
t1=$(now_ms)
if [ "$status" -ne 0 ]; then
    echo "KEEL-BENCH: create failed: $tool create exited $status: $(echo "$out" | tail -n 1)"
else
    deadline=$((t0 + WAIT_SECS * 1000))
    while ! grep -a -q "KEEL-DOMU: init reached" "$log" 2>/dev/null && [ "$(now_ms)" -lt "$deadline" ]; do
        sleep 0.05
    done
    t2=$(now_ms)
    if grep -a -q "KEEL-DOMU: init reached" "$log" 2>/dev/null; then
        $tool destroy $name >/dev/null 2>&1
        status=$?
        t3=$(now_ms)
        echo "KEEL-BENCH: create tool=$tool type=$type ms=$((t2 - t0)) cmd_ms=$((t1 - t0))" \
            "destroy_ms=$((t3 - t2)) status=$status"
    else
        echo "KEEL-BENCH: create failed: no \"KEEL-DOMU: init reached\" in $log after $WAIT_SECS s" \
            "(last: $(tail -n 1 "$log" 2>/dev/null | tr -d '\r'))"
        $tool destroy $name >/dev/null 2>&1
    fi
fi

# create/destroy cycles, back to back.
c=$(cfg cycle)
i=0
create_ms=0
destroy_ms=0
while [ "$i" -lt "$cycles" ]; do
    t0=$(now_ms)
    out=$($tool create "$c" 2>&1)
    status=$?
    t1=$(now_ms)
    if [ "$status" -ne 0 ]; then
        echo "KEEL-BENCH: cycle failed: $tool create exited $status: $(echo "$out" | tail -n 1)"
        break
    fi
    out=$($tool destroy cycle 2>&1)
    status=$?
    t2=$(now_ms)
    if [ "$status" -ne 0 ]; then
        echo "KEEL-BENCH: cycle failed: $tool destroy exited $status: $(echo "$out" | tail -n 1)"
        break
    fi
    create_ms=$((create_ms + t1 - t0))
    destroy_ms=$((destroy_ms + t2 - t1))
    i=$((i + 1))
done
if [ "$i" -gt 0 ] && [ "$i" -eq "$cycles" ]; then
    echo "KEEL-BENCH: cycle tool=$tool type=$type runs=$i ms=$(((create_ms + destroy_ms) / i))" \
        "create_ms=$((create_ms / i)) destroy_ms=$((destroy_ms / i)) status=0"
fi

# The domU's split devices against dom0's own (xtask/assets/devbench.sh).
[ -x /bin/devbench ] && /bin/devbench "$tool" "$type" "$kernel"
# Save, restore and localhost live migration (xtask/assets/savebench.sh).
[ -x /bin/savebench ] && /bin/savebench "$tool" "$type" "$kernel"
