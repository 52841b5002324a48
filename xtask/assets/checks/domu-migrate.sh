# xm migrate --live (issue 14) of a running Debian domU with a vif to this same host (keel-relocd on localhost),
# ten times, while the guest rewrites 4 MiB of memory every second. Its task keeps 8 MiB of random bytes in a tmpfs
# (in its RAM) whose MD5 must never change, counts in a tight loop reading /proc/uptime (so the longest gap between
# two of its reads, per second, is the guest's own view of the downtime), and pings dom0. Then the failures: a
# relocation server holding another key, one whose hosts-allow refuses us, a receiver killed mid-stream, and a save
# that cannot be written (the guest's suspend is cancelled): each time the guest runs on here, the same domain, and
# nothing is left on the target. tests/tests/xl/migrate.rs judges the KEEL-CHECK: mig-* lines.
MIG_ROUNDS=${MIG_ROUNDS:-10}
if domu_available && [ -d /sys/class/net/xenbr0 ] && [ -f /run/keel-relocd.pid ]; then
    before=$(domu_free)
    cat >/tmp/mig-task <<'EOF2'
#!/bin/busybox sh
. /lib/task.sh
task_setup
task_wait /sys/class/net/eth0
ip addr add 10.0.3.11/24 dev eth0
ip link set eth0 up
mkdir -p /dev/shm
mount -t tmpfs -o size=32m tmpfs /dev/shm
head -c 8388608 /dev/urandom >/dev/shm/region
echo "KEEL-MIG-REGION: $(md5sum </dev/shm/region | cut -d' ' -f1)"
# The steady writer: 4 MiB of its memory rewritten every second.
(while :; do dd if=/dev/zero of=/dev/shm/dirt bs=65536 count=64 conv=notrunc 2>/dev/null; sleep 1; done) &
# The region's checksum and a ping, every 3 s.
(while :; do
    if ping -c 1 -W 2 10.0.3.1 >/dev/null 2>&1; then p=ok; else p=no; fi
    echo "KEEL-MIG-SUM: $(md5sum </dev/shm/region | cut -d' ' -f1) ping=$p"
    sleep 3
done) &
EOF2
    domu_counter_script KEEL-MIG-TICK >>/tmp/mig-task
    initrd=$(domu_initrd_task mig /tmp/mig-task)
    domu_cfg mig "ramdisk = \"$initrd\"" 'vcpus = 2' 'memory = 128' "vif = [ 'bridge=xenbr0' ]" \
        'extra = "console=hvc0 quiet"' >/dev/null
    log=$(domu_log mig)
    rm -f "$log"
    out=$(xm create /tmp/mig.cfg 2>&1)
    echo "KEEL-CHECK: mig-create $out"
    domu_wait mig 'KEEL-MIG-SUM: .* ping=ok' 300
    region=$(grep -a 'KEEL-MIG-REGION: ' "$log" | tail -n 1 | tr -d '\r' | sed 's/.*: //')
    echo "KEEL-CHECK: mig-region $region"
    domu_wait mig 'KEEL-MIG-TICK: ' 60 2
    last_tick() { grep -a 'KEEL-MIG-TICK: ' "$log" | tail -n 1 | tr -d '\r' | sed 's/.*KEEL-MIG-TICK: //'; }
    last_sum() { grep -a 'KEEL-MIG-SUM: ' "$log" | tail -n 1 | tr -d '\r' | sed 's/.*KEEL-MIG-SUM: //'; }
    boots() { grep -a -c 'KEEL-DOMU: init reached' "$log"; }
    r=1
    while [ $r -le "$MIG_ROUNDS" ]; do
        id=$(xm domid mig 2>/dev/null)
        ticks=$(domu_count mig 'KEEL-MIG-TICK: ')
        before_tick=$(last_tick)
        out=$(xm migrate --live mig localhost 2>&1)
        echo "KEEL-CHECK: mig-rounds-$r $(echo "$out" | grep '^round' | tr '\n' ';')"
        echo "KEEL-CHECK: mig-migrate-$r $(echo "$out" | tail -n 1)"
        after=$(domu_count mig 'KEEL-MIG-TICK: ')
        sums=$(domu_count mig 'KEEL-MIG-SUM: ')
        domu_wait mig 'KEEL-MIG-TICK: ' 60 $((after + 3))
        domu_wait mig 'KEEL-MIG-SUM: .* ping=ok' 60 $((sums + 1))
        # The longest gap the guest saw in the seconds around the hand-over.
        gaps=$(grep -a 'KEEL-MIG-TICK: ' "$log" | sed -n "$((ticks + 1)),$((after + 3))p" | tr -d '\r' |
            sed 's/.*gap=\([0-9]*\).*/\1/' | sort -n | tail -n 1)
        echo "KEEL-CHECK: mig-after-$r before=[$before_tick] first=[$(grep -a 'KEEL-MIG-TICK: ' "$log" |
            sed -n "$((after + 1))p" | tr -d '\r' | sed 's/.*KEEL-MIG-TICK: //')] worst=${gaps:-none}0ms" \
            "sum=[$(last_sum)] boots=$(boots) old=$id new=$(xm domid mig 2>/dev/null)" \
            "names=$(xm list | awk 'NR > 1 { print $1 }' | grep -c -- '--')"
        [ $r -eq 1 ] && round1=$(domu_free)
        last_free=$(domu_free)
        r=$((r + 1))
    done
    grep -a -i -E 'BUG|Oops|WARNING' "$log" | tr -d '\r' | tail -n 8 | sed 's/^/KEEL-MIG-LOG: /'
    grep -a -m 1 -A 40 'kernel BUG\|Oops\|WARNING' "$log" | tr -d '\r' | sed 's/^/KEEL-MIG-TRACE: /'
    # Is the guest the same one, still running here, after a failure? (Its domain id, and its count moving.)
    same() {
        n0=$(domu_count mig 'KEEL-MIG-TICK: ')
        domu_wait mig 'KEEL-MIG-TICK: ' 60 $((n0 + 2)) && t=moving || t=stopped
        echo "id=$(xm domid mig 2>/dev/null) ticks=$t domains=$(xenstore-list /local/domain 2>/dev/null | grep -vc '^0$')"
    }
    id=$(xm domid mig 2>/dev/null)
    echo "KEEL-CHECK: mig-id $id"
    # A relocation server with another key (port 8003), and one whose hosts-allow refuses us (port 8004).
    mkdir -p /tmp/relocd
    printf '(xend-relocation-server yes)\n(xend-relocation-port 8003)\n(xend-relocation-psk-file /tmp/relocd/other.psk)\n' \
        >/tmp/relocd/other.sxp
    printf '(xend-relocation-server yes)\n(xend-relocation-port 8004)\n(xend-relocation-hosts-allow %s)\n' \
        "'^nothere\$'" >/tmp/relocd/deny.sxp
    keel-relocd --config /tmp/relocd/other.sxp --generate-psk >/dev/null
    keel-relocd --config /tmp/relocd/other.sxp >/tmp/relocd/other.log 2>&1 &
    p1=$!
    keel-relocd --config /tmp/relocd/deny.sxp >/tmp/relocd/deny.log 2>&1 &
    p2=$!
    sleep 1
    out=$(xm migrate --live mig localhost:8003 2>&1)
    echo "KEEL-CHECK: mig-wrongkey rc=$? $out"
    echo "KEEL-CHECK: mig-wrongkey-after $(same) log=[$(grep -c 'authentication failed' /tmp/relocd/other.log)]"
    out=$(xm migrate --live mig localhost -p 8004 2>&1)
    echo "KEEL-CHECK: mig-denied rc=$? $out"
    echo "KEEL-CHECK: mig-denied-after $(same) log=[$(grep -c 'refused' /tmp/relocd/deny.log)]"
    kill $p1 $p2 2>/dev/null
    # The receiver killed mid-stream, once it has made the incoming domain and taken some of its memory.
    seen=$(grep -c 'incoming domain' /var/log/xen/relocd.log)
    xm migrate --live mig localhost >/tmp/relocd/killed.out 2>&1 &
    mp=$!
    n=0
    while [ $n -lt 200 ] && [ "$(grep -c 'incoming domain' /var/log/xen/relocd.log)" -le "$seen" ]; do
        n=$((n + 1))
        sleep 0.1
    done
    sleep 2
    # The receiving child the daemon started for this connection (its log names the process; busybox has no pkill).
    child=$(grep 'receiving (process' /var/log/xen/relocd.log | tail -n 1 | sed 's/.*process \([0-9]*\)).*/\1/')
    kill -9 "$child"
    wait $mp
    echo "KEEL-CHECK: mig-killed rc=$? $(tail -n 1 /tmp/relocd/killed.out)"
    sleep 2
    echo "KEEL-CHECK: mig-killed-after $(same) incoming=$(xm list | grep -c -- '--incoming')" \
        "cleanup=[$(grep -c 'destroyed incoming domain' /var/log/xen/relocd.log)]"
    # A save that fails once the guest has suspended: the suspend is cancelled and the guest runs on.
    mkdir -p /tmp/small
    mount -t tmpfs -o size=1m tmpfs /tmp/small
    out=$(xm save mig /tmp/small/mig.chk 2>&1)
    echo "KEEL-CHECK: mig-savefail rc=$? $out"
    echo "KEEL-CHECK: mig-savefail-after $(same) sum=[$(last_sum)] files=$(ls /tmp/small | wc -l)"
    umount /tmp/small
    sed 's/^/KEEL-MIG-RELOCD: /' /var/log/xen/relocd.log | tail -n 40
    xm destroy mig
    n=0
    while [ $n -lt 100 ] && [ "$(domu_free)" != "$before" ]; do
        n=$((n + 1))
        sleep 0.2
    done
    echo "KEEL-CHECK: mig-rounds-free last-vs-round1=$((last_free - round1))"
    echo "KEEL-CHECK: mig-destroyed free-vs-start=$(($(domu_free) - before))" \
        "vifs=$(ls /sys/class/net | grep -c '^vif')" \
        "domains=$(xenstore-list /local/domain 2>/dev/null | grep -vc '^0$')"
fi
