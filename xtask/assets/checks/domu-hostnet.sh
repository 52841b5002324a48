# A hostile netfront cannot hurt dom0 or Keel (issue 13): Keel's test guest hostile_netfront (tests/guests/src/bin/
# hostile_netfront.rs, carried in /usr/lib/keel/guests/ by the xl test's initramfs only) boots as a PVH domU with
# four vifs on xenbr0 and acts as a deliberately bad netfront against dom0's stock xen-netback: a valid ARP
# request (dom0's reply must come back on its rx ring), then bad grant refs, short sizes, too many slots, a reused
# id, a notification flood, and the requests netback takes as fatal (data across the page's end, 24 slots, a
# producer far ahead). It prints `hostile: ...` lines through console_io (`xm dmesg` shows them as
# "(dN) hostile: ...") and `Test result: SUCCESS` when every probe went as it must. Meanwhile a Debian domU (the
# bystander) pings dom0 every second: it must go on doing so. Afterwards dom0's daemons still run, dom0's kernel
# logged no oops, and nothing is left (vifs, backend directories, pages). The hostile guest runs twice: the first
# run may give dom0's p2m a page table or two for the range netback maps its four vifs' grants into (kept, as Xen
# keeps a domain's p2m tables), the second must cost nothing at all. tests/tests/xl/hostnet.rs judges the
# KEEL-CHECK: hostnet-* lines.
HOSTNET_GUEST=/usr/lib/keel/guests/hostile_netfront
if domu_available && [ -f "$HOSTNET_GUEST" ]; then
    oops0=$(dmesg | grep -c -E 'BUG:|Oops|general protection|Kernel panic')
    before=$(domu_free)

    # The bystander: a Debian domU whose stock netfront pings dom0 every second.
    cat >/tmp/nbystander-task <<'EOF2'
#!/bin/busybox sh
/bin/busybox mkdir -p /usr/bin /usr/sbin
/bin/busybox --install -s
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m.ko 2>/dev/null; done
n=0
while [ $n -lt 100 ] && ! [ -d /sys/class/net/eth0 ]; do
    n=$((n + 1))
    sleep 0.1
done
ip addr add 10.0.3.8/24 dev eth0
ip link set eth0 up
n=0
while :; do
    if ping -c 1 -W 1 10.0.3.1 >/dev/null 2>&1; then
        echo "KEEL-DOMU-NPING: $n ok"
    else
        echo "KEEL-DOMU-NPING: $n failed"
    fi
    n=$((n + 1))
    sleep 1
done
EOF2
    initrd=$(domu_initrd_task nbystander /tmp/nbystander-task)
    domu_cfg nbystander "ramdisk = \"$initrd\"" 'vcpus = 1' 'memory = 192' "vif = [ 'bridge=xenbr0' ]" \
        'extra = "console=hvc0"' >/dev/null
    out=$(xm create /tmp/nbystander.cfg 2>&1)
    echo "KEEL-CHECK: hostnet-bystander-create $out"
    domu_wait nbystander 'KEEL-DOMU-NPING: [0-9]+ ok' 240
    echo "KEEL-CHECK: hostnet-bystander-ping-before $(domu_count nbystander 'KEEL-DOMU-NPING: [0-9]+ ok')"

    cat >/tmp/hostnet.cfg <<EOF2
name = "hostnet"
type = "pvh"
kernel = "$HOSTNET_GUEST"
memory = 16
vcpus = 1
vif = [ 'mac=00:16:3e:4b:01:09,bridge=xenbr0', 'mac=00:16:3e:4b:01:0a,bridge=xenbr0',
        'mac=00:16:3e:4b:01:0b,bridge=xenbr0', 'mac=00:16:3e:4b:01:0c,bridge=xenbr0' ]
EOF2
    # hostnet_run TAG: one run of the hostile guest, its lines tagged TAG; returns once it is gone and its vifs
    # with it.
    hostnet_run() {
        test_guest_run hostnet /tmp/hostnet.cfg "$1"
        # Its vifs go (the bystander's stays), then free memory settles.
        n=0
        while [ $n -lt 150 ] && [ "$(ls /sys/class/net | grep -c '^vif')" -gt 1 ]; do
            n=$((n + 1))
            sleep 0.2
        done
        n=0
        while [ $n -lt 10 ] && [ "$(domu_free)" != "$(sleep 1; domu_free)" ]; do n=$((n + 1)); done
    }
    hostnet_run hostnet
    after1=$(domu_free)
    hostnet_run hostnet-again
    echo "KEEL-CHECK: hostnet-again-free $(($(domu_free) - after1))"
    # What dom0's netback said about it, and whether dom0 is still well.
    dmesg | grep -a -i -E 'netback|vif|fatal error|Bad packet|Too many slots|Impossible|Cross page' |
        grep -v 'Modules linked in' | tail -n 20 | sed 's/^/KEEL-HOSTNET-DMESG: /'
    echo "KEEL-CHECK: hostnet-dom0-fatal $(dmesg | grep -c 'fatal error; disabling device')"
    echo "KEEL-CHECK: hostnet-dom0-oops $(($(dmesg | grep -c -E 'BUG:|Oops|general protection|Kernel panic') - oops0))"
    echo "KEEL-CHECK: hostnet-daemons xenstored=$(pidof xenstored >/dev/null && echo up || echo down)" \
        "xenconsoled=$(pidof xenconsoled >/dev/null && echo up || echo down)" \
        "xenstore=$(xenstore-read /local/domain/0/name >/dev/null 2>&1 && echo answers || echo silent)"
    # The bystander goes on pinging dom0: five more replies within 20 seconds, none failed.
    ping0=$(domu_count nbystander 'KEEL-DOMU-NPING: [0-9]+ ok')
    fail0=$(domu_count nbystander 'KEEL-DOMU-NPING: [0-9]+ failed')
    domu_wait nbystander 'KEEL-DOMU-NPING: [0-9]+ ok' 20 $((ping0 + 5))
    echo "KEEL-CHECK: hostnet-bystander-ping after=$(($(domu_count nbystander 'KEEL-DOMU-NPING: [0-9]+ ok') - ping0))" \
        "failed=$(($(domu_count nbystander 'KEEL-DOMU-NPING: [0-9]+ failed') - fail0))"
    xm destroy nbystander >/dev/null 2>&1
    n=0
    while [ $n -lt 150 ] && ls /sys/class/net | grep -q '^vif'; do
        n=$((n + 1))
        sleep 0.2
    done
    echo "KEEL-CHECK: hostnet-leftover vifs=$(ls /sys/class/net | grep -c '^vif')" \
        "backends=$(xenstore-list /local/domain/0/backend/vif 2>/dev/null | wc -l)" \
        "free-vs-start=$(($(domu_free) - before))"
fi
