# Guest networks through dom0's stock netback and bridge (issue 13): two Debian PVH domUs with
# `vif = [ 'bridge=xenbr0' ]` each (a fresh 00:16:3e MAC), on the LAN dom0's init made (xenbr0, 10.0.3.1/24). The
# guests' stock netfront brings up eth0 with the address given on their command line (keel.ip=); each pings dom0
# and the other guest, dom0 pings them, and one sends 64 MiB of random bytes over TCP (busybox nc) to dom0, which
# checks its SHA-256. Then network-detach makes the first guest's eth0 go and network-attach brings one back.
# Afterwards no vif, backend directory or page is left. tests/tests/xl/net.rs judges the KEEL-CHECK: net-* lines.
if domu_available; then
    cat >/tmp/net-task <<'EOF'
#!/bin/busybox sh
. /lib/task.sh
task_setup
arg() { sed -n "s/.*keel\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
me=$(arg ip)
peer=$(arg peer)
task_wait /sys/class/net/eth0
ip addr add "$me/24" dev eth0
ip link set eth0 up
echo "KEEL-DOMU-NET: up $(cat /sys/class/net/eth0/address) $(ip -o -4 addr show dev eth0 | awk '{ print $4 }')"
# ping HOST: the number of replies to 3 pings, once one ping has gone through (for up to 40 s: the peer may still
# be booting, and a bridge port forwards a moment after its vif comes up).
tries() {
    n=0
    while [ $n -lt 20 ] && ! ping -c 1 -W 2 "$1" >/dev/null 2>&1; do
        n=$((n + 1))
    done
    got=$(ping -c 3 -W 2 "$1" 2>/dev/null | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')
    echo "${got:-0}"
}
echo "KEEL-DOMU-NET: ping dom0 $(tries 10.0.3.1)/3"
echo "KEEL-DOMU-NET: ping peer $(tries "$peer")/3"
if [ "$(arg send)" = 1 ]; then
    # 64 MiB in its rootfs (a tmpfs of half its RAM: the sender has 320 MiB).
    dd if=/dev/urandom of=/tmp/blob bs=1048576 count=64 iflag=fullblock 2>/dev/null
    echo "KEEL-DOMU-NET: blob $(sha256sum /tmp/blob | cut -d' ' -f1)"
    t0=$(cut -d' ' -f1 /proc/uptime)
    nc 10.0.3.1 5000 </tmp/blob
    echo "KEEL-DOMU-NET: sent rc=$? from=$t0 to=$(cut -d' ' -f1 /proc/uptime)"
    rm -f /tmp/blob
fi
echo "KEEL-DOMU-NET: ready for hotplug"
# network-detach makes eth0 go; network-attach brings an interface back. dom0 does so once the other guest's
# transfer is over, minutes later under TCG: wait for up to 10 minutes.
n=0
while [ $n -lt 6000 ] && [ -d /sys/class/net/eth0 ]; do
    n=$((n + 1))
    sleep 0.1
done
echo "KEEL-DOMU-NET: unplug eth0 $([ -d /sys/class/net/eth0 ] && echo still-there || echo gone)"
n=0
while [ $n -lt 6000 ] && [ -z "$(ls /sys/class/net | grep '^eth')" ]; do
    n=$((n + 1))
    sleep 0.1
done
new=$(ls /sys/class/net | grep '^eth' | head -n 1)
echo "KEEL-DOMU-NET: hotplug ${new:-none} $([ -n "$new" ] && cat /sys/class/net/$new/address)"
EOF
    initrd=$(domu_initrd_task net /tmp/net-task)
    domu_cfg net1 "ramdisk = \"$initrd\"" 'vcpus = 1' 'memory = 192' "vif = [ 'bridge=xenbr0' ]" \
        'extra = "console=hvc0 keel.ip=10.0.3.2 keel.peer=10.0.3.3"' >/dev/null
    domu_cfg net2 "ramdisk = \"$initrd\"" 'vcpus = 1' 'memory = 320' \
        "vif = [ 'mac=00:16:3e:4b:00:03,bridge=xenbr0' ]" \
        'extra = "console=hvc0 keel.ip=10.0.3.3 keel.peer=10.0.3.2 keel.send=1"' >/dev/null
    echo "KEEL-CHECK: net-bridge $(ip -o -4 addr show dev xenbr0 2>&1 | awk '{ print $2, $4 }')"
    before=$(domu_free)
    rm -f /tmp/net-recv
    nc_sink 5000 /tmp/net-recv
    out1=$(xm create /tmp/net1.cfg 2>&1)
    out2=$(xm create /tmp/net2.cfg 2>&1)
    echo "KEEL-CHECK: net-create $out1 / $out2"
    id1=$(echo "$out1" | sed -n 's/^Started domain net1 (id=\([0-9]*\))$/\1/p')
    id2=$(echo "$out2" | sed -n 's/^Started domain net2 (id=\([0-9]*\))$/\1/p')
    if [ -n "$id1" ] && [ -n "$id2" ]; then
        xm network-list net1 net2 2>&1 | sed 's/^/KEEL-NET-LIST: /'
        echo "KEEL-CHECK: net-bridge-ports $(ls /sys/class/net/xenbr0/brif 2>/dev/null | tr '\n' ' ')"
        domu_wait net1 'KEEL-DOMU-NET: ping peer' 240
        domu_wait net2 'KEEL-DOMU-NET: ping peer' 120
        echo "KEEL-CHECK: net-dom0-ping net1=$(ping -c 3 -W 2 10.0.3.2 2>/dev/null | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')/3" \
            "net2=$(ping -c 3 -W 2 10.0.3.3 2>/dev/null | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')/3"
        domu_wait net2 'KEEL-DOMU-NET: sent' 900
        n=0
        while [ $n -lt 100 ] && kill -0 "$nc_pid" 2>/dev/null && [ "$(wc -c </tmp/net-recv)" -lt 67108864 ]; do
            n=$((n + 1))
            sleep 0.1
        done
        echo "KEEL-CHECK: net-received $(wc -c </tmp/net-recv) $(sha256sum /tmp/net-recv | cut -d' ' -f1)"
        for g in net1 net2; do
            grep -a 'KEEL-DOMU-NET: ' "$(domu_log $g)" | tr -d '\r' | sed "s/.*KEEL-DOMU-NET: /KEEL-CHECK: net-guest $g /"
        done
        if domu_wait net1 'KEEL-DOMU-NET: ready for hotplug' 60; then
            echo "KEEL-CHECK: net-detach $(xm network-detach net1 0 2>&1; echo "rc=$?")"
            echo "KEEL-CHECK: net-detached vif=$([ -d /sys/class/net/vif$id1.0 ] && echo left || echo gone)" \
                "backend=$(xenstore-exists /local/domain/0/backend/vif/$id1/0 2>/dev/null && echo left || echo gone)"
            domu_wait net1 'KEEL-DOMU-NET: unplug eth0' 60
            echo "KEEL-CHECK: net-attach $(xm network-attach net1 mac=00:16:3e:4b:00:07 bridge=xenbr0 2>&1; echo "rc=$?")"
            domu_wait net1 'KEEL-DOMU-NET: hotplug' 60
            grep -a -E 'KEEL-DOMU-NET: (unplug|hotplug)' "$(domu_log net1)" | tr -d '\r' |
                sed 's/.*KEEL-DOMU-NET: /KEEL-CHECK: net-guest net1 /'
            echo "KEEL-CHECK: net-reattached vif=$(ls /sys/class/net/xenbr0/brif 2>/dev/null | grep "^vif$id1\." | tr '\n' ' ')"
        fi
    else
        for g in net1 net2; do
            [ -f "$(domu_log $g)" ] && tail -n 5 "$(domu_log $g)" | tr -d '\r' | sed "s/^/KEEL-DOMU-LOG: $g /"
        done
    fi
    nc_sink_stop
    [ -n "$id1" ] && xm destroy "$id1" >/dev/null 2>&1
    [ -n "$id2" ] && xm destroy "$id2" >/dev/null 2>&1
    n=0
    while [ $n -lt 100 ] && [ "$(domu_free)" != "$before" ]; do
        n=$((n + 1))
        sleep 0.1
    done
    echo "KEEL-CHECK: net-leftover vifs=$(ls /sys/class/net | grep -c '^vif')" \
        "backends=$(xenstore-list /local/domain/0/backend/vif 2>/dev/null | wc -l)" \
        "free-diff=$(($(domu_free) - before))"
    grep -a 'vif' /var/log/xen/xen-hotplug.log 2>/dev/null | tail -n 6 | sed 's/^/KEEL-NET-HOTPLUG: /'
    rm -f /tmp/net-recv
fi
