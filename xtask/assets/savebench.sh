#!/bin/sh
# /bin/savebench (xtask/assets/savebench.sh), run by createbench for `cargo xtask bench` (Keel: xm) and `--vs-xen`
# (Xen 4.17: xl): save, restore and localhost live migration of a 256 MiB, 2-vCPU domU, idle and busy.
#   savebench <tool> <type> <kernel>
# The domU boots the same kernel and busybox initrd as createbench's, whose task counts in a tight loop reading
# /proc/uptime and prints, every second, the longest gap between two of its reads (the guest's own view of a
# downtime, 10 ms resolution); the busy guest also rewrites 4 MiB of its memory every second. Per kind one line:
#   KEEL-BENCH: save tool=<tool> kind=<idle|busy> save_ms=<save> restore_ms=<restore> status=0
#   KEEL-BENCH: migrate tool=<tool> kind=<idle|busy> migrate_ms=<migrate's wall time> gap_ms=<the guest's longest
#       gap around the migration> status=0
# or `KEEL-BENCH: save failed: <why>`. Keel's migration goes to keel-relocd on localhost; Xen's xl runs its own
# receiver locally (`xl migrate -s "" NAME "xl migrate-receive"`: an empty ssh command runs the host string).
grep -q control_d /proc/xen/capabilities 2>/dev/null || exit 0
tool=$1
type=$2
kernel=$3
. /etc/keel/checks.d/0domu.sh
WAIT_SECS=300
# The save files live in dom0's RAM: a tmpfs of their own, as the initramfs's root may not hold one (Xen's dom0
# root, with Xen's tools and libraries, ran out of space at 256 MiB).
mkdir -p /var/lib/xen/save
mount -t tmpfs -o size=320m tmpfs /var/lib/xen/save 2>/dev/null

# The first error lines of a command's output, then its last line (xl prints its cause first and its clean-up last).
why() { echo "$1" | grep -i -m 3 'error\|fail\|cannot' | tr '\n' ' '; echo "$1" | tail -n 1; }

now_ms() {
    read -r up _ </proc/uptime
    echo $((${up%.*} * 1000 + (1${up#*.} - 100) * 10))
}

cat >/tmp/savebench-task <<'EOF'
#!/bin/busybox sh
/bin/busybox mkdir -p /usr/bin /usr/sbin /tmp
/bin/busybox --install -s
if grep -q keel.busy /proc/cmdline; then
    mkdir -p /dev/shm
    mount -t tmpfs -o size=16m tmpfs /dev/shm
    (while :; do dd if=/dev/zero of=/dev/shm/dirt bs=65536 count=64 conv=notrunc 2>/dev/null; sleep 1; done) &
fi
EOF
domu_counter_script KEEL-SAVEBENCH-TICK >>/tmp/savebench-task
initrd=$(domu_initrd_task savebench /tmp/savebench-task)

for kind in idle busy; do
    name=sb$kind
    extra="console=hvc0"
    [ $kind = busy ] && extra="console=hvc0 keel.busy"
    cat >/tmp/$name.cfg <<EOF
name = "$name"
type = "$type"
kernel = "$kernel"
ramdisk = "$initrd"
extra = "$extra"
memory = 256
vcpus = 2
EOF
    log=$(domu_log $name)
    rm -f "$log"
    if ! out=$($tool create /tmp/$name.cfg 2>&1); then
        echo "KEEL-BENCH: save failed: $tool create: $(echo "$out" | tail -n 1)"
        continue
    fi
    if ! domu_wait $name 'KEEL-SAVEBENCH-TICK: ' $WAIT_SECS 3; then
        echo "KEEL-BENCH: save failed: $kind guest: no ticks in $log"
        $tool destroy $name >/dev/null 2>&1
        continue
    fi
    file=/var/lib/xen/save/$name.chk
    rm -f $file
    t0=$(now_ms)
    out=$($tool save $name $file 2>&1)
    st=$?
    t1=$(now_ms)
    if [ $st -ne 0 ]; then
        echo "KEEL-BENCH: save failed: $tool save: $(why "$out")"
        rm -f $file
        $tool destroy $name >/dev/null 2>&1
        continue
    fi
    out=$($tool restore $file 2>&1)
    st=$?
    t2=$(now_ms)
    rm -f $file
    if [ $st -ne 0 ]; then
        echo "KEEL-BENCH: save failed: $tool restore: $(why "$out")"
        continue
    fi
    echo "KEEL-BENCH: save tool=$tool kind=$kind save_ms=$((t1 - t0)) restore_ms=$((t2 - t1)) status=0"
    n=$(domu_count $name 'KEEL-SAVEBENCH-TICK: ')
    domu_wait $name 'KEEL-SAVEBENCH-TICK: ' 60 $((n + 3))
    n=$(domu_count $name 'KEEL-SAVEBENCH-TICK: ')
    t3=$(now_ms)
    if [ "$tool" = xm ]; then
        out=$(xm migrate --live $name localhost 2>&1)
    else
        out=$(xl migrate -s "" $name "xl migrate-receive" 2>&1)
    fi
    st=$?
    t4=$(now_ms)
    if [ $st -ne 0 ]; then
        echo "KEEL-BENCH: save failed: $tool migrate: $(why "$out")"
        $tool destroy $name >/dev/null 2>&1
        continue
    fi
    domu_wait $name 'KEEL-SAVEBENCH-TICK: ' 60 $((n + 3))
    gap=$(grep -a 'KEEL-SAVEBENCH-TICK: ' "$log" | sed -n "$((n + 1)),\$p" | tr -d '\r' |
        sed 's/.*gap=\([0-9]*\).*/\1/' | sort -n | tail -n 1)
    echo "KEEL-BENCH: migrate tool=$tool kind=$kind migrate_ms=$((t4 - t3)) gap_ms=$((${gap:-0} * 10)) status=0"
    echo "KEEL-BENCH: save-detail tool=$tool kind=$kind $(echo "$out" | tail -n 1)"
    $tool destroy $name >/dev/null 2>&1
done
umount /var/lib/xen/save 2>/dev/null
