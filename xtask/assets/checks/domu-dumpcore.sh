# `xm dump-core` (issue 12; dom0-tools/src/xm/dumpcore.rs, gethvmcontext of a paused domain): the core of a domU
# read back with binutils' readelf (the xl test's initramfs carries /usr/bin/readelf) and od/dd. First create.sh's
# tiny PVH guest (16 MiB, 1 vCPU; 0domu.sh's tiny_guest):
# once it has said hello it blocks in its loop at 0x100061..0x100072, and its message is at physical 0x10008c. Then,
# where dom0 carries the domU kernel, a 128 MiB 2-vCPU Debian domU at its init, whose vCPUs must be in kernel text
# (0xffffffff8...). Every core is deleted and every domain destroyed; tests/tests/xl/dumpcore.rs judges the lines.
DUMPCORE_READELF=/usr/bin/readelf

# dumpcore_u64 FILE OFFSET: the little-endian 64-bit word at OFFSET, as 0x%016x.
dumpcore_u64() {
    # shellcheck disable=SC2046
    set -- $(od -A n -t x1 -j "$2" -N 8 "$1")
    echo "0x$8$7$6$5$4$3$2$1"
}

# dumpcore_facts TAG FILE: KEEL-CHECK lines for the core FILE: its ELF type, the bytes its PT_LOADs hold, its
# NT_PRSTATUS notes, and each vCPU's RIP (pr_reg's 17th register: the note's descriptor starts 20 bytes into it,
# after the 12-byte header and "CORE\0" padded to 8; pr_reg is 112 bytes into the descriptor).
dumpcore_facts() {
    tag=$1
    core=$2
    echo "KEEL-CHECK: dumpcore-$tag-type $($DUMPCORE_READELF -h "$core" 2>&1 | awk -F: '$1 ~ /^ *Type$/ { sub(/^ */, "", $2); print $2 }')"
    loads=$($DUMPCORE_READELF -l -W "$core" 2>&1 | awk '$1 == "LOAD" { print $2, $4, $6 }')
    bytes=0
    segs=0
    for size in $(echo "$loads" | awk '{ print $3 }'); do
        bytes=$((bytes + $size))
        segs=$((segs + 1))
    done
    echo "KEEL-CHECK: dumpcore-$tag-load bytes=$bytes segments=$segs"
    notes=$($DUMPCORE_READELF -n "$core" 2>&1)
    echo "KEEL-CHECK: dumpcore-$tag-prstatus $(echo "$notes" | grep -c NT_PRSTATUS)"
    note_at=$($DUMPCORE_READELF -l -W "$core" 2>&1 | awk '$1 == "NOTE" { print $2 }')
    rips=""
    at=$(($note_at))
    # Each NT_PRSTATUS note is 12 + 8 + 336 bytes long, one per vCPU, first in the segment.
    k=$(echo "$notes" | grep -c NT_PRSTATUS)
    while [ "$k" -gt 0 ]; do
        rips="$rips $(dumpcore_u64 "$core" $((at + 20 + 112 + 16 * 8)))"
        at=$((at + 12 + 8 + 336))
        k=$((k - 1))
    done
    echo "KEEL-CHECK: dumpcore-$tag-rip$rips"
    DUMPCORE_LOADS=$loads
}

# dumpcore_read FILE GPA LEN: LEN bytes at guest-physical GPA, found through the PT_LOADs of the last
# dumpcore_facts.
dumpcore_read() {
    echo "$DUMPCORE_LOADS" | while read -r off paddr size; do
        if [ $(($2)) -ge $(($paddr)) ] && [ $(($2 + $3)) -le $(($paddr + $size)) ]; then
            dd if="$1" bs=1 skip=$(($off + $2 - $paddr)) count="$3" 2>/dev/null
            break
        fi
    done
}

# Only where dom0 has readelf (the xl test's initramfs): elsewhere this file prints one line and does nothing.
dumpcore_main() {
    tiny_guest >/tmp/dumpcore-tiny.elf
    cat >/tmp/dumpcore-tiny.cfg <<EOF
name = "dumpcore-tiny"
type = "pvh"
kernel = "/tmp/dumpcore-tiny.elf"
memory = 16
vcpus = 1
EOF
    dc_before=$(domu_free)
    dc_out=$(xm create /tmp/dumpcore-tiny.cfg 2>&1)
    dc_id=$(echo "$dc_out" | sed -n 's/^Started domain dumpcore-tiny (id=\([0-9]*\))$/\1/p')
    if [ -n "$dc_id" ]; then
        n=0
        while [ $n -lt 100 ] && [ "$(xenstore-read /local/domain/$dc_id/data/tiny 2>/dev/null)" != ran ]; do
            n=$((n + 1))
            sleep 0.1
        done
        dc_out=$(xm dump-core dumpcore-tiny /tmp/dumpcore-tiny.core 2>&1)
        echo "KEEL-CHECK: dumpcore-tiny-run rc=$? $dc_out"
        echo "KEEL-CHECK: dumpcore-tiny-state $(xm list 2>&1 | awk '$1 == "dumpcore-tiny" { print $5 }')"
        dumpcore_facts tiny /tmp/dumpcore-tiny.core
        echo "KEEL-CHECK: dumpcore-tiny-message $(dumpcore_read /tmp/dumpcore-tiny.core 0x10008c 24)"
        rm -f /tmp/dumpcore-tiny.core
        # Paused by the toolstack first: stays paused after the dump.
        xm pause "$dc_id" >/dev/null 2>&1
        dc_out=$(xm dump-core "$dc_id" /tmp/dumpcore-tiny.core 2>&1)
        echo "KEEL-CHECK: dumpcore-tiny-paused rc=$? state=$(xm list 2>&1 | awk '$1 == "dumpcore-tiny" { print $5 }')"
        rm -f /tmp/dumpcore-tiny.core
        # A directory that does not exist: a one-line error and no file.
        dc_out=$(xm dump-core "$dc_id" /nonexistent/dir/core 2>&1)
        echo "KEEL-CHECK: dumpcore-bad-path rc=$? $(echo "$dc_out" | head -n 1) left=$(ls /nonexistent/dir 2>/dev/null | wc -l)"
        xm destroy "$dc_id" >/dev/null 2>&1
        n=0
        while [ $n -lt 100 ] && [ "$(domu_free)" != "$dc_before" ]; do
            n=$((n + 1))
            sleep 0.1
        done
        echo "KEEL-CHECK: dumpcore-tiny-destroyed free-returned=$([ "$(domu_free)" = "$dc_before" ] && echo yes || echo no)"
    else
        echo "KEEL-CHECK: dumpcore-tiny-run create failed: $dc_out"
    fi
    rm -f /tmp/dumpcore-tiny.elf /tmp/dumpcore-tiny.cfg

    if domu_available; then
        domu_cfg dumpcore-debian 'memory = 128' >/dev/null
        dc_before=$(domu_free)
        dc_out=$(xm create /tmp/dumpcore-debian.cfg 2>&1)
        dc_id=$(echo "$dc_out" | sed -n 's/^Started domain dumpcore-debian (id=\([0-9]*\))$/\1/p')
        if [ -n "$dc_id" ] && domu_wait dumpcore-debian 'KEEL-DOMU-TICK' 240; then
            dc_out=$(xm dump-core dumpcore-debian /tmp/dumpcore-debian.core 2>&1)
            echo "KEEL-CHECK: dumpcore-debian-run rc=$? $dc_out"
            dumpcore_facts debian /tmp/dumpcore-debian.core
            rm -f /tmp/dumpcore-debian.core
            # It runs on after the dump: its clock-driven tick goes on.
            ticks=$(domu_count dumpcore-debian 'KEEL-DOMU-TICK')
            domu_wait dumpcore-debian 'KEEL-DOMU-TICK' 30 $((ticks + 2))
            echo "KEEL-CHECK: dumpcore-debian-runs-on $([ "$(domu_count dumpcore-debian 'KEEL-DOMU-TICK')" -ge $((ticks + 2)) ] && echo yes || echo no)"
        else
            echo "KEEL-CHECK: dumpcore-debian-run did not boot: $dc_out"
            tail -n 5 "$(domu_log dumpcore-debian)" 2>/dev/null | sed 's/^/KEEL-DOMU-LOG: /'
        fi
        [ -n "$dc_id" ] && xm destroy "$dc_id" >/dev/null 2>&1
        n=0
        while [ $n -lt 100 ] && [ "$(domu_free)" != "$dc_before" ]; do
            n=$((n + 1))
            sleep 0.1
        done
        echo "KEEL-CHECK: dumpcore-debian-destroyed free-returned=$([ "$(domu_free)" = "$dc_before" ] && echo yes || echo no)"
        rm -f /tmp/dumpcore-debian.cfg
    fi
}

if [ -x "$DUMPCORE_READELF" ]; then
    dumpcore_main
else
    echo "KEEL-CHECK: dumpcore-skipped no $DUMPCORE_READELF in this dom0"
fi
