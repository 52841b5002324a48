#!/bin/sh
# /bin/devbench (xtask/assets/devbench.sh), run by /bin/createbench after its own figures, for `cargo xtask bench`
# (Keel) and `--vs-xen` (both sides): a domU's split devices against dom0 itself.
#   devbench <tool> <type> <kernel>
# It puts a 64 MiB image on a loop device in dom0 and times dom0 reading and writing that device directly
# (O_DIRECT, 1 MiB blocks), then starts the createbench domU (256 MiB, 1 vCPU) with the loop device as `phy:` disk
# xvda and a vif on xenbr0; inside, the domU (its stock blkfront and netfront) times the same sequential read and
# write of /dev/xvda, pings dom0 20 times (the average round trip) and sends 64 MiB to dom0 over TCP (busybox nc).
# Times in the guest come from its /proc/uptime (10 ms), in dom0 from /proc/uptime too. One line:
#   KEEL-BENCH: dev tool=<tool> type=<type> read_kbs=<domU> write_kbs=<domU> dom0_read_kbs=<…> dom0_write_kbs=<…>
#       tcp_kbs=<domU→dom0> ping_us=<domU→dom0 average> status=0
# or `KEEL-BENCH: dev failed: <why>`.
grep -q control_d /proc/xen/capabilities 2>/dev/null || exit 0
tool=$1
type=$2
kernel=$3
. /etc/keel/checks.d/0domu.sh
MIB=64

# Centiseconds of /proc/uptime.
cs() {
    read -r up _ </proc/uptime
    echo $((${up%.*} * 100 + (1${up#*.} - 100)))
}
# kbs KIB CENTISECONDS: KiB/s.
kbs() { [ "$2" -gt 0 ] && echo $(($1 * 100 / $2)) || echo 0; }

fail() {
    echo "KEEL-BENCH: dev failed: $*"
    [ -n "$loop" ] && losetup -d "$loop" 2>/dev/null
    rm -f "$img"
    exit 1
}

[ -d /sys/class/net/xenbr0 ] || fail "no bridge xenbr0 in dom0"
ip -o -4 addr show dev xenbr0 | grep -q ' 10\.0\.3\.1/' || fail "xenbr0 has not dom0's address 10.0.3.1"
img=/var/lib/xen/images/devbench.img
mkdir -p /var/lib/xen/images
dd if=/dev/zero of=$img bs=1048576 count=$MIB 2>/dev/null || fail "cannot make $img"
loop=$(losetup -f) && losetup "$loop" $img || fail "cannot put $img on a loop device"

# dom0 directly.
t0=$(cs)
dd if="$loop" of=/dev/null bs=1048576 iflag=direct 2>/dev/null || fail "dom0 cannot read $loop"
t1=$(cs)
dd if=/dev/zero of="$loop" bs=1048576 count=$MIB oflag=direct 2>/dev/null || fail "dom0 cannot write $loop"
t2=$(cs)
dom0_read=$(kbs $((MIB * 1024)) $((t1 - t0)))
dom0_write=$(kbs $((MIB * 1024)) $((t2 - t1)))

cat >/tmp/devbench-task <<EOF
#!/bin/busybox sh
. /lib/task.sh
task_setup
cs() { read -r up _ </proc/uptime; echo \$((\${up%.*} * 100 + (1\${up#*.} - 100))); }
task_wait /dev/xvda
task_wait /sys/class/net/eth0
ip addr add 10.0.3.2/24 dev eth0
ip link set eth0 up
t0=\$(cs)
dd if=/dev/xvda of=/dev/null bs=1048576 iflag=direct 2>/dev/null
t1=\$(cs)
dd if=/dev/zero of=/dev/xvda bs=1048576 count=$MIB oflag=direct 2>/dev/null
t2=\$(cs)
ping -c 3 -W 2 10.0.3.1 >/dev/null 2>&1
rtt=\$(ping -c 20 -i 0.2 10.0.3.1 2>/dev/null | sed -n 's|.*min/avg/max = [0-9.]*/\([0-9.]*\)/.*|\1|p')
t3=\$(cs)
dd if=/dev/zero bs=1048576 count=$MIB iflag=fullblock 2>/dev/null | nc 10.0.3.1 5001
t4=\$(cs)
echo "KEEL-DEVBENCH: read_cs=\$((t1 - t0)) write_cs=\$((t2 - t1)) rtt_ms=\${rtt:-none} tcp_cs=\$((t4 - t3))"
/sbin/poweroff
EOF
initrd=$(domu_initrd_task devbench /tmp/devbench-task)
cat >/tmp/devbench.cfg <<EOF
name = "devbench"
type = "$type"
kernel = "$kernel"
ramdisk = "$initrd"
extra = "console=hvc0"
memory = 256
vcpus = 1
disk = [ 'phy:$loop,xvda,w' ]
vif = [ 'bridge=xenbr0' ]
on_poweroff = "destroy"
EOF
log=$(domu_log devbench)
rm -f "$log"
nc_sink 5001 /dev/null
out=$($tool create /tmp/devbench.cfg 2>&1) || {
    nc_sink_stop
    fail "$tool create exited $?: $(echo "$out" | tail -n 1)"
}
domu_wait devbench 'KEEL-DEVBENCH: ' 300
line=$(grep -a 'KEEL-DEVBENCH: ' "$log" | tail -n 1 | tr -d '\r')
$tool destroy devbench >/dev/null 2>&1
nc_sink_stop
losetup -d "$loop" 2>/dev/null
loop=
rm -f "$img"
[ -n "$line" ] || fail "no KEEL-DEVBENCH line in $log (last: $(tail -n 1 "$log" 2>/dev/null | tr -d '\r'))"
field() { echo "$line" | sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
rtt=$(field rtt_ms)
case "$rtt" in
*.*) ping_us=$((${rtt%.*} * 1000 + $(echo "${rtt#*.}000" | cut -c1-3 | sed 's/^0*//;s/^$/0/'))) ;;
[0-9]*) ping_us=$((rtt * 1000)) ;;
*) fail "no ping replies from the domU ($line)" ;;
esac
echo "KEEL-BENCH: dev tool=$tool type=$type read_kbs=$(kbs $((MIB * 1024)) "$(field read_cs)")" \
    "write_kbs=$(kbs $((MIB * 1024)) "$(field write_cs)") dom0_read_kbs=$dom0_read dom0_write_kbs=$dom0_write" \
    "tcp_kbs=$(kbs $((MIB * 1024)) "$(field tcp_cs)") ping_us=$ping_us status=0"
