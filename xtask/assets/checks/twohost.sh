# Live migration between two machines (issue 15): two Keel hosts under QEMU, joined by a virtual network cable (a
# socket netdev between their e1000e cards, bridged into xenbr0 by each dom0: 192.168.77.1 and .2) and sharing one
# disk image (each sees it as /dev/vda). `keel.twohost=1|2` on dom0's command line says which host this is.
# - Both: the relocation settings a sysadmin gives each host: the same key (a test key here) and the peer allowed.
# - Host 1: starts a Debian domU whose disk is the shared one (`phy:/dev/vda`) and whose vif is on the bridge;
#   inside, a counter (domu_counter_script) and a loop appending its uptime to a file on that disk. Once host 2
#   says it is ready, `xm migrate --live` moves the guest there; host 2 sends it back; host 1 checks that the same
#   counting process went on, that the guest did not reboot, then destroys it and reads from the shared disk the
#   lines the guest wrote on both hosts.
# - Host 2: says it is ready, waits for the guest, watches it count and ping both dom0s, and migrates it back.
# tests/tests/xl.rs (guest_migrates_between_two_hosts) judges the KEEL-CHECK: two-* lines of both serial logs.
role=$(sed -n 's/.*keel\.twohost=\([12]\).*/\1/p' /proc/cmdline)
if [ -n "$role" ] && domu_available && [ -b /dev/vda ]; then
    me=192.168.77.$role
    peer=192.168.77.$((3 - role))
    echo "KEEL-CHECK: two-host $role $(ip -o -4 addr show dev xenbr0 | awk '{ print $4 }') ports=$(ls /sys/class/net/xenbr0/brif | tr '\n' ' ')"
    # The same key on both hosts (a sysadmin copies it; `keel-relocd --generate-psk` makes one), and the peer
    # in hosts-allow.
    echo 6b65656c2074776f20686f737473207465737420726f6f6d20706c656173652e >/etc/xen/relocation.psk
    cat >/etc/xen/xend-config.sxp <<'EOF'
(xend-relocation-server yes)
(xend-relocation-port 8002)
(xend-relocation-address '')
(xend-relocation-hosts-allow '^localhost$ ^192\\.168\\.77\\.[0-9]+$')
(xend-relocation-psk-file /etc/xen/relocation.psk)
EOF
    [ -f /run/keel-relocd.pid ] && kill "$(cat /run/keel-relocd.pid)" 2>/dev/null
    sleep 0.5
    /usr/sbin/keel-relocd >>/var/log/xen/relocd.log 2>&1 &
    echo $! >/run/keel-relocd.pid
    log=$(domu_log twohost)
    tick() { grep -a 'KEEL-TWO-TICK: ' "$log" 2>/dev/null | tail -n 1 | tr -d '\r' | sed 's/.*KEEL-TWO-TICK: //'; }
    # wait_for SECONDS COMMAND...: runs COMMAND every half second until it succeeds.
    wait_for() {
        n=$(($1 * 2))
        shift
        while [ $n -gt 0 ] && ! "$@" >/dev/null 2>&1; do
            n=$((n - 1))
            sleep 0.5
        done
        [ $n -gt 0 ]
    }
    if [ "$role" = 1 ]; then
        rm -f /tmp/two-ready
        (sleep 900 | nc -l -p 5001 >/tmp/two-ready) &
        cat >/tmp/two-task <<'EOF2'
#!/bin/busybox sh
. /lib/task.sh
task_setup
task_wait /dev/xvda
task_wait /sys/class/net/eth0
ip addr add 192.168.77.10/24 dev eth0
ip link set eth0 up
mkdir -p /mnt/disk
mount -t ext4 /dev/xvda /mnt/disk && echo "KEEL-TWO-DISK: mounted"
# Its uptime on the shared disk every 2 s, written through.
(while :; do echo "up $(cut -d' ' -f1 /proc/uptime)" >>/mnt/disk/ticks; sync; sleep 2; done) &
# Both dom0s, every 3 s.
(while :; do
    a=no; b=no
    ping -c 1 -W 2 192.168.77.1 >/dev/null 2>&1 && a=ok
    ping -c 1 -W 2 192.168.77.2 >/dev/null 2>&1 && b=ok
    echo "KEEL-TWO-PING: up=$(cut -d' ' -f1 /proc/uptime) host1=$a host2=$b"
    sleep 3
done) &
EOF2
        domu_counter_script KEEL-TWO-TICK >>/tmp/two-task
        initrd=$(domu_initrd_task two /tmp/two-task)
        domu_cfg twohost "ramdisk = \"$initrd\"" 'vcpus = 1' 'memory = 128' "disk = [ 'phy:/dev/vda,xvda,w' ]" \
            "vif = [ 'mac=00:16:3e:77:00:10,bridge=xenbr0' ]" 'extra = "console=hvc0 quiet"' >/dev/null
        rm -f "$log"
        echo "KEEL-CHECK: two-create $(xm create /tmp/twohost.cfg 2>&1)"
        domu_wait twohost 'KEEL-TWO-PING: .* host1=ok' 240
        domu_wait twohost 'KEEL-TWO-TICK: ' 60 2
        wait_for 600 grep -q ready /tmp/two-ready
        echo "KEEL-CHECK: two-peer-ready $(cat /tmp/two-ready)"
        echo "KEEL-CHECK: two-before $(tick) boots=$(domu_count twohost 'KEEL-DOMU: init reached')"
        ticks=$(domu_count twohost 'KEEL-TWO-TICK: ')
        out=$(xm migrate --live twohost $peer 2>&1)
        echo "$out" | sed 's/^/KEEL-TWO-MIGRATE: /'
        echo "KEEL-CHECK: two-away $(xm domid twohost >/dev/null 2>&1 && echo still-here || echo gone)"
        # A failed migration: host 2 need not wait for the guest.
        echo "$out" | tail -n 1 | grep -q '^Migrated domain ' || echo abort | nc $peer 5002
        # Back from host 2: the same domain name, a new id here.
        if echo "$out" | tail -n 1 | grep -q '^Migrated domain ' && wait_for 900 xm domid twohost; then
            echo "KEEL-CHECK: two-back id=$(xm domid twohost)"
            domu_wait twohost 'KEEL-TWO-TICK: ' 120 $((ticks + 3))
            domu_wait twohost 'KEEL-TWO-PING: .* host1=ok host2=ok' 60 $(($(domu_count twohost 'KEEL-TWO-PING: .* host1=ok host2=ok') + 1))
            echo "KEEL-CHECK: two-after $(tick) boots=$(domu_count twohost 'KEEL-DOMU: init reached')"
            echo "KEEL-CHECK: two-ping $(grep -a 'KEEL-TWO-PING: ' "$log" | tail -n 1 | tr -d '\r' | sed 's/.*KEEL-TWO-PING: //')"
        else
            echo "KEEL-CHECK: two-back never"
        fi
        xm destroy twohost >/dev/null 2>&1
        wait_for 30 sh -c '! xm domid twohost'
        # What dom0 cached of the disk (its first probe at boot) predates the guest's writes.
        blockdev --flushbufs /dev/vda
        echo 3 >/proc/sys/vm/drop_caches
        mkdir -p /tmp/two-mnt
        if mount -t ext4 -o ro /dev/vda /tmp/two-mnt; then
            # The guest's uptimes on disk: how many, the first, the last, and the longest time between two.
            awk '$1 == "up" { if (n) { d = $2 - last; if (d > gap) gap = d } else first = $2; last = $2; n++ }
                END { printf "KEEL-CHECK: two-disk lines=%d first=%s last=%s maxgap=%.2f\n", n, first, last, gap }' \
                /tmp/two-mnt/ticks
            umount /tmp/two-mnt
        else
            echo "KEEL-CHECK: two-disk not mountable"
        fi
        echo end | nc $peer 5002
    else
        rm -f /tmp/two-abort
        (sleep 1800 | nc -l -p 5002 >/tmp/two-abort) &
        # Ready: relocd listens. Tell host 1 (it may still be booting: retry for up to 10 minutes).
        wait_for 600 sh -c "echo ready | nc $peer 5001"
        echo "KEEL-CHECK: two-told-ready $?"
        wait_for 900 sh -c 'xm domid twohost || grep -q abort /tmp/two-abort'
        if xm domid twohost >/dev/null 2>&1; then
            echo "KEEL-CHECK: two-arrived id=$(xm domid twohost)"
            domu_wait twohost 'KEEL-TWO-TICK: ' 120 3
            domu_wait twohost 'KEEL-TWO-PING: .* host1=ok host2=ok' 60
            echo "KEEL-CHECK: two-here $(tick) boots=$(domu_count twohost 'KEEL-DOMU: init reached')"
            echo "KEEL-CHECK: two-ping $(grep -a 'KEEL-TWO-PING: ' "$log" | tail -n 1 | tr -d '\r' | sed 's/.*KEEL-TWO-PING: //')"
            out=$(xm migrate --live twohost $peer 2>&1)
            echo "$out" | sed 's/^/KEEL-TWO-MIGRATE: /'
            echo "KEEL-CHECK: two-gone $(xm domid twohost >/dev/null 2>&1 && echo still-here || echo gone)"
            # Host 1 still pings this dom0 from the guest: stay up until it says it is done.
            wait_for 600 grep -q end /tmp/two-abort
        else
            echo "KEEL-CHECK: two-arrived never"
        fi
    fi
    echo "KEEL-CHECK: two-done"
fi
