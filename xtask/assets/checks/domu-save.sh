# xm save / xm restore (issue 14) of a running Debian domU with a disk and a vif, ten times. Its task counts (one line a
# second, the count kept in a shell variable: it goes on from where it stopped only if the process itself
# survives), reads back a file it wrote to its disk before the first save (page cache dropped first, so the read
# goes through blkfront to dom0), and pings dom0 over xenbr0. Each round saves it (the guest suspends itself, its
# state goes to a file, the domain is destroyed), restores it, and waits for its next lines. Then a corrupted and a
# truncated copy of the file must be refused without creating anything, and after the last destroy nothing is
# left. tests/tests/xl/save.rs judges the KEEL-CHECK: save-* lines.
SAVE_ROUNDS=${SAVE_ROUNDS:-10}
if domu_available && [ -d /sys/class/net/xenbr0 ]; then
    before=$(domu_free)
    mkdir -p /var/lib/xen/images /var/lib/xen/save
    img=/var/lib/xen/images/save.img
    dd if=/dev/zero of=$img bs=1M count=16 2>/dev/null
    mke2fs -F -q $img >/dev/null 2>&1 || mke2fs -F $img >/dev/null 2>&1
    cat >/tmp/save-task <<'EOF2'
#!/bin/busybox sh
. /lib/task.sh
task_setup
task_wait /dev/xvda
task_wait /sys/class/net/eth0
mkdir -p /mnt
mount -t ext2 /dev/xvda /mnt
head -c 65536 /dev/urandom >/mnt/data
sync
echo "KEEL-SAVE-WRITTEN: $(md5sum </mnt/data | cut -d' ' -f1)"
ip addr add 10.0.3.9/24 dev eth0
ip link set eth0 up
n=0
while :; do
    n=$((n + 1))
    echo 3 >/proc/sys/vm/drop_caches
    sum=$(md5sum </mnt/data | cut -d' ' -f1)
    if ping -c 1 -W 2 10.0.3.1 >/dev/null 2>&1; then p=ok; else p=no; fi
    echo "KEEL-SAVE-TICK: n=$n sum=$sum ping=$p"
    sleep 1
done
EOF2
    initrd=$(domu_initrd_task save /tmp/save-task)
    domu_cfg save "ramdisk = \"$initrd\"" 'vcpus = 2' 'memory = 128' "disk = [ 'file:$img,xvda,w' ]" \
        "vif = [ 'bridge=xenbr0' ]" 'extra = "console=hvc0 quiet"' >/dev/null
    log=$(domu_log save)
    rm -f "$log"
    out=$(xm create /tmp/save.cfg 2>&1)
    echo "KEEL-CHECK: save-create $out"
    domu_wait save 'KEEL-SAVE-TICK: .* ping=ok' 300
    echo "KEEL-CHECK: save-written $(grep -a 'KEEL-SAVE-WRITTEN: ' "$log" | tail -n 1 | tr -d '\r' | sed 's/.*: //')"
    last_tick() { grep -a 'KEEL-SAVE-TICK: ' "$log" | tail -n 1 | tr -d '\r' | sed 's/.*KEEL-SAVE-TICK: //'; }
    boots() { grep -a -c 'KEEL-DOMU: init reached' "$log"; }
    r=1
    while [ $r -le "$SAVE_ROUNDS" ]; do
        ticks=$(domu_count save 'KEEL-SAVE-TICK: ')
        # The last round's file has been restored: dom0's files live in its RAM, which holds one save at a time.
        rm -f /var/lib/xen/save/save.chk
        out=$(xm save save /var/lib/xen/save/save.chk 2>&1)
        echo "KEEL-CHECK: save-save-$r $out"
        echo "KEEL-CHECK: save-before-$r $(last_tick) gone=$(xm domid save >/dev/null 2>&1 && echo no || echo yes)"
        after_save=$(domu_count save 'KEEL-SAVE-TICK: ')
        out=$(xm restore /var/lib/xen/save/save.chk 2>&1)
        echo "KEEL-CHECK: save-restore-$r $out"
        # Two lines after the restore, the second with the ping answered (the vif reconnected).
        domu_wait save 'KEEL-SAVE-TICK: ' 120 $((after_save + 2))
        domu_wait save 'KEEL-SAVE-TICK: .* ping=ok' 60 $(($(domu_count save 'KEEL-SAVE-TICK: .* ping=ok') + 1))
        first=$(grep -a 'KEEL-SAVE-TICK: ' "$log" | sed -n "$((after_save + 1))p" | tr -d '\r' | sed 's/.*KEEL-SAVE-TICK: //')
        echo "KEEL-CHECK: save-after-$r first=[$first] last=[$(last_tick)] boots=$(boots) ticks-before-save=$ticks"
        # Free memory while the restored guest runs: the same after every round as after the first.
        [ $r -eq 1 ] && round1=$(domu_free)
        last_free=$(domu_free)
        r=$((r + 1))
    done
    # The guest's kernel said nothing alarming about its resumes.
    grep -a -i -E 'BUG|Oops|WARNING|suspend|resum|freez' "$log" | tr -d '\r' | tail -n 12 | sed 's/^/KEEL-SAVE-LOG: /'
    grep -a -m 1 -A 45 'kernel BUG\|Oops\|WARNING' "$log" | tr -d '\r' | sed 's/^/KEEL-SAVE-TRACE: /'
    # Bad files: refused, nothing created.
    ndom=$(xenstore-list /local/domain 2>/dev/null | wc -l)
    # (The file itself is spoilt, in place: dom0's files live in its RAM, which holds no second copy.)
    bad=/var/lib/xen/save/save.chk
    printf 'X' | dd of=$bad bs=1 seek=200000 conv=notrunc 2>/dev/null
    out=$(xm restore $bad 2>&1)
    echo "KEEL-CHECK: save-corrupt rc=$? $out"
    head -c 100000 $bad >$bad.head && mv $bad.head $bad
    out=$(xm restore $bad 2>&1)
    echo "KEEL-CHECK: save-truncated rc=$? $out"
    echo "KEEL-CHECK: save-bad-files-left domains=$(($(xenstore-list /local/domain 2>/dev/null | wc -l) - ndom))"
    xm destroy save
    n=0
    while [ $n -lt 100 ] && [ "$(domu_free)" != "$before" ]; do
        n=$((n + 1))
        sleep 0.2
    done
    echo "KEEL-CHECK: save-rounds-free last-vs-round1=$((last_free - round1))"
    echo "KEEL-CHECK: save-destroyed free-vs-start=$(($(domu_free) - before))" \
        "loops=$(losetup -a 2>/dev/null | grep -c save.img) vifs=$(ls /sys/class/net | grep -c '^vif')" \
        "domains=$(xenstore-list /local/domain 2>/dev/null | grep -vc '^0$')"
    rm -f /var/lib/xen/save/save.chk $img
fi
