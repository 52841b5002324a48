# A hostile frontend cannot hurt dom0 or Keel (issue 13): Keel's test guest hostile_frontend (tests/guests/src/bin/
# hostile_frontend.rs, carried in /usr/lib/keel/guests/ by the xl test's initramfs only) boots as a PVH domU with
# five disks and acts as a deliberately bad blkfront against dom0's stock xen-blkback: bad grant refs, bad
# segments, sectors past the end, an unknown operation, a write to a read-only disk, bad rings offered at connect
# time, a notification flood and last a producer index far ahead of the consumer. It prints `hostile: ...` lines through console_io (`xm dmesg` shows them as "(dN) hostile: ...") and
# `Test result: SUCCESS` when every bad request got an error and every good one worked. Meanwhile a Debian domU
# (the bystander) writes to its own disk every second: it must go on doing so. Afterwards dom0's daemons still
# run, dom0's kernel logged no oops, and nothing is left (loop devices, backend directories, pages).
# tests/tests/xl/hostile.rs judges the KEEL-CHECK: hostile-* lines.
HOSTILE_GUEST=/usr/lib/keel/guests/hostile_frontend
if domu_available && [ -f "$HOSTILE_GUEST" ]; then
    hostile_loops() { losetup -a 2>/dev/null | wc -l; }
    for m in $(cat /usr/lib/keel/domu-modules/order 2>/dev/null); do
        case $m in xen-*) continue ;; esac
        [ -d "/sys/module/$(echo "$m" | tr - _)" ] || insmod "/usr/lib/keel/domu-modules/$m.ko" 2>/dev/null
    done
    img=/var/lib/xen/images
    mkdir -p $img
    dd if=/dev/zero of=$img/hostile.img bs=1024 count=4096 2>/dev/null
    printf 'keel-hostile-disk sector 0\n' | dd of=$img/hostile.img conv=notrunc 2>/dev/null
    # xvdb, read-only; xvdc..xvde, offered bad rings (their backends must give up).
    for d in ro c d e; do
        dd if=/dev/zero of=$img/hostile-$d.img bs=1024 count=1024 2>/dev/null
    done
    dd if=/dev/zero of=$img/hbystander.img bs=1024 count=4096 2>/dev/null
    loops0=$(hostile_loops)
    oops0=$(dmesg | grep -c -E 'BUG:|Oops|general protection|Kernel panic')
    warn0=$(dmesg | grep -c 'WARNING:')
    before=$(domu_free)

    # The bystander: a Debian domU whose stock blkfront writes a block of its disk (and syncs it) every second.
    cat >/tmp/hbystander-task <<'EOF'
#!/bin/busybox sh
. /lib/task.sh
task_setup
task_wait /dev/xvda
n=0
while :; do
    if dd if=/dev/urandom of=/dev/xvda bs=4096 count=1 seek=$((n % 1000)) conv=notrunc,fsync 2>/dev/null; then
        echo "KEEL-DOMU-HIO: $n ok"
    else
        echo "KEEL-DOMU-HIO: $n failed"
    fi
    n=$((n + 1))
    sleep 1
done
EOF
    initrd=$(domu_initrd_task hbystander /tmp/hbystander-task)
    domu_cfg hbystander "ramdisk = \"$initrd\"" 'vcpus = 1' 'memory = 128' \
        "disk = [ 'file:$img/hbystander.img,xvda,w' ]" >/dev/null
    out=$(xm create /tmp/hbystander.cfg 2>&1)
    echo "KEEL-CHECK: hostile-bystander-create $out"
    domu_wait hbystander 'KEEL-DOMU-HIO: [0-9]+ ok' 240
    echo "KEEL-CHECK: hostile-bystander-io-before $(domu_count hbystander 'KEEL-DOMU-HIO: [0-9]+ ok')"

    cat >/tmp/hostile.cfg <<EOF
name = "hostile"
type = "pvh"
kernel = "$HOSTILE_GUEST"
memory = 16
vcpus = 1
disk = [ 'file:$img/hostile.img,xvda,w', 'file:$img/hostile-ro.img,xvdb,r', 'file:$img/hostile-c.img,xvdc,w',
         'file:$img/hostile-d.img,xvdd,w', 'file:$img/hostile-e.img,xvde,w' ]
EOF
    test_guest_run hostile /tmp/hostile.cfg hostile
    # What dom0's blkback said about it, and whether dom0 is still well.
    dmesg | grep -a -i -E 'blkback|blkif|bogus|vbd' | grep -v 'Modules linked in' | tail -n 16 | sed 's/^/KEEL-HOSTILE-DMESG: /'
    echo "KEEL-CHECK: hostile-dom0-bogus $(dmesg | grep -c 'bogus ring requests')"
    echo "KEEL-CHECK: hostile-dom0-oops $(($(dmesg | grep -c -E 'BUG:|Oops|general protection|Kernel panic') - oops0))"
    # The functions new WARNINGs came from. Linux's blkback has one on a connect that failed to map the ring or bind
    # its event channel (xen_blkif_disconnect counts request structures that were never allocated): the bad-ring
    # probes meet it, under Xen as well.
    echo "KEEL-CHECK: hostile-dom0-warnings $(dmesg | grep 'WARNING:' | tail -n +$((warn0 + 1)) |
        sed -n 's/.* at [^ ]* \([A-Za-z_0-9.]*\)+.*/\1/p' | sort | uniq -c | tr -s ' ' | tr '\n' ';')"
    echo "KEEL-CHECK: hostile-daemons xenstored=$(pidof xenstored >/dev/null && echo up || echo down)" \
        "xenconsoled=$(pidof xenconsoled >/dev/null && echo up || echo down)" \
        "xenstore=$(xenstore-read /local/domain/0/name >/dev/null 2>&1 && echo answers || echo silent)"
    echo "KEEL-CHECK: hostile-disk-sector1 $(dd if=$img/hostile.img bs=512 skip=1 count=1 2>/dev/null | head -c 18)"
    # The bystander goes on writing its disk: five more writes within 20 seconds.
    io=$(domu_count hbystander 'KEEL-DOMU-HIO: [0-9]+ ok')
    domu_wait hbystander 'KEEL-DOMU-HIO: [0-9]+ ok' 20 $((io + 5))
    echo "KEEL-CHECK: hostile-bystander-io after=$(($(domu_count hbystander 'KEEL-DOMU-HIO: [0-9]+ ok') - io))" \
        "failed=$(domu_count hbystander 'KEEL-DOMU-HIO: [0-9]+ failed')"
    xm destroy hbystander >/dev/null 2>&1
    n=0
    while [ $n -lt 150 ] && { [ "$(domu_free)" != "$before" ] || [ "$(hostile_loops)" != "$loops0" ]; }; do
        n=$((n + 1))
        sleep 0.2
    done
    echo "KEEL-CHECK: hostile-leftover loops=$(hostile_loops)/$loops0" \
        "backends=$(xenstore-list /local/domain/0/backend/vbd 2>/dev/null | wc -l)" \
        "free-returned=$([ "$(domu_free)" = "$before" ] && echo yes || echo "no($before/$(domu_free))")"
    rm -f $img/hostile.img $img/hostile-ro.img $img/hostile-c.img $img/hostile-d.img $img/hostile-e.img \
        $img/hbystander.img
fi
