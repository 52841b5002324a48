# A domU on the machine's own devices (issue 15), when dom0 owns them (dom0-platform=host) and its network card is
# bridged (S20hostdevices, then network-bridge in S30xencommons): a Debian PVH domU with a `phy:` disk that is
# dom0's real disk (/dev/vda, a virtio-blk disk holding an ext4 filesystem the host wrote), a `file:` disk kept in
# /var/lib/xen/images on another real disk (when dom0 mounted one there), and a vif on xenbr0, whose port to the
# outside is dom0's card. The guest's stock blkfront reads the host's file back from both disks and writes one
# of its own on xvda; its stock netfront gets a DHCP lease from the host's network through the bridge, pings the
# host and receives a TCP transfer from it. dom0 then reads the guest's file from its real disk.
# tests/tests/xl.rs (domu_on_the_hosts_devices) judges the KEEL-CHECK: hostdev-* lines.
if domu_available && [ -f /run/keel-dom0-ip ] && [ -b /dev/vda ] &&
    ls /sys/class/net/xenbr0/brif 2>/dev/null | grep -q .; then
    echo "KEEL-CHECK: hostdev-bridge ports=$(ls /sys/class/net/xenbr0/brif | tr '\n' ' ')addr=$(ip -o -4 addr show dev xenbr0 | awk '{ print $4 }')"
    cat >/tmp/hostdev-task <<'EOF'
#!/bin/busybox sh
. /lib/task.sh
task_setup
say() { echo "KEEL-DOMU-HOSTDEV: $*"; }
task_wait /dev/xvda
task_wait /dev/xvdb
mkdir -p /mnt/a /mnt/b
# check DEVICE DIR: the host's file on DEVICE, mounted on DIR, against the SHA-256 the host wrote beside it.
check() {
    if mount -t ext4 "$1" "$2"; then
        say "disk ${1#/dev/} want=$(cat "$2/keel-check.sha256") got=$(sha256sum "$2/keel-check" | cut -d' ' -f1)"
    else
        say "disk ${1#/dev/} not mountable"
    fi
}
check /dev/xvda /mnt/a
dd if=/dev/urandom of=/mnt/a/from-domu bs=1024 count=1024 2>/dev/null
say "wrote $(sha256sum /mnt/a/from-domu | cut -d' ' -f1)"
[ -b /dev/xvdb ] && check /dev/xvdb /mnt/b
sync
umount /mnt/a /mnt/b 2>/dev/null
task_wait /sys/class/net/eth0
cat >/tmp/udhcpc.sh <<'EOS'
#!/bin/sh
case "$1" in
bound | renew)
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route add default via "${router%% *}"
    echo "$ip" >/tmp/lease
    ;;
esac
EOS
chmod +x /tmp/udhcpc.sh
ip link set eth0 up
# A bridge port forwards a moment after its vif comes up: up to 10 tries.
udhcpc -i eth0 -n -q -t 10 -T 2 -s /tmp/udhcpc.sh >/dev/null 2>&1
say "lease $(cat /tmp/lease 2>/dev/null || echo none) mac=$(cat /sys/class/net/eth0/address)"
got=$(ping -c 3 -W 5 10.0.2.2 2>/dev/null | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')
say "ping 10.0.2.2 ${got:-0}/3"
say "tcp got=$(nc 10.0.2.100 1234 </dev/null | sha256sum | cut -d' ' -f1)"
say "done"
/sbin/poweroff
EOF
    initrd=$(domu_initrd_task hostdev /tmp/hostdev-task)
    second=
    [ -f /var/lib/xen/images/guest.img ] && second=", 'file:/var/lib/xen/images/guest.img,xvdb,r'"
    domu_cfg hostdev "ramdisk = \"$initrd\"" 'vcpus = 1' 'memory = 192' \
        "disk = [ 'phy:/dev/vda,xvda,w'$second ]" "vif = [ 'bridge=xenbr0' ]" >/dev/null
    out=$(xm create /tmp/hostdev.cfg 2>&1)
    echo "KEEL-CHECK: hostdev-create $out"
    if echo "$out" | grep -q '^Started domain hostdev '; then
        echo "KEEL-CHECK: hostdev-bridge-ports $(ls /sys/class/net/xenbr0/brif | tr '\n' ' ')"
        domu_wait hostdev 'KEEL-DOMU-HOSTDEV: done' 240
        # The devices' interrupts in dom0 meanwhile (for the log).
        grep -E 'ahci|virtio|eth|enp' /proc/interrupts | tr -s ' ' | sed 's/^/KEEL-CHECK: hostdev-interrupts /'
        grep -a 'KEEL-DOMU-HOSTDEV: ' "$(domu_log hostdev)" | tr -d '\r' | sed 's/.*KEEL-DOMU-HOSTDEV: /KEEL-CHECK: hostdev-domu /'
        # Powered off, the monitor destroys it: then dom0 reads the guest's file.
        domu_wait_gone hostdev
        xm destroy hostdev >/dev/null 2>&1
        # What dom0 cached of the disk (its first probe at boot) predates the guest's writes.
        blockdev --flushbufs /dev/vda
        echo 3 >/proc/sys/vm/drop_caches
        mkdir -p /tmp/hostdev-mnt
        if mount -t ext4 -o ro /dev/vda /tmp/hostdev-mnt; then
            echo "KEEL-CHECK: hostdev-dom0-read $(sha256sum /tmp/hostdev-mnt/from-domu 2>&1 | cut -d' ' -f1)"
            umount /tmp/hostdev-mnt
        else
            echo "KEEL-CHECK: hostdev-dom0-read not mountable"
        fi
    fi
    echo "KEEL-CHECK: hostdev-done"
fi
