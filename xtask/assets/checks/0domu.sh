# Helpers for the checks that run Debian's stock kernel as a PVH domU (issue 12 and later). They only define
# functions and run nothing: a check calls `domu_available` first, because only the xl test's initramfs carries the
# domU kernel in /usr/lib/keel/vmlinuz (`KEEL_DOMU=1 cargo xtask ...` adds it to the normal one).
#
# Every domU boots the same busybox initrd, made once here: its init prints
#   KEEL-DOMU: init reached, <N> cpus
# to its console (hvc0, recorded by xenconsoled --log=guest in /var/log/xen/console/guest-<name>.log), and then one
#   KEEL-DOMU-TICK: up=<seconds of its own uptime> cpus=<online CPU list> mem=<MemTotal kB>
# line a second: a clock-driven counter that stops while the domain is paused, and that shows vcpu-set and mem-set
# from inside. Its /sbin/poweroff and /sbin/reboot say so on the console and power off or reboot (Linux 6.1's
# control/shutdown handling runs them through orderly_poweroff and orderly_reboot). With `keel.spin=N` in its
# `extra` it also runs N CPU-bound loops. Like udev on a distribution, it brings CPUs online that `xm vcpu-set`
# has made present again (Linux's Xen hotplug marks them present; user space onlines them).
DOMU_KERNEL=/usr/lib/keel/vmlinuz
DOMU_INITRD=/tmp/domu.cpio.gz

domu_available() { [ -f "$DOMU_KERNEL" ]; }

domu_initrd() {
    [ -f "$DOMU_INITRD" ] && return 0
    rm -rf /tmp/domu && mkdir -p /tmp/domu/bin /tmp/domu/sbin /tmp/domu/dev /tmp/domu/proc /tmp/domu/sys
    cp /bin/busybox /tmp/domu/bin/busybox
    cat >/tmp/domu/init <<'EOF'
#!/bin/busybox sh
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
exec >/dev/hvc0 2>&1
echo "KEEL-DOMU: init reached, $(/bin/busybox grep -c ^processor /proc/cpuinfo) cpus"
# keel.spin=N on its command line: N CPU-bound loops, for the scheduler checks.
spin=$(/bin/busybox sed -n 's/.*keel\.spin=\([0-9]*\).*/\1/p' /proc/cmdline)
i=0
while [ "$i" -lt "${spin:-0}" ]; do
    (while :; do :; done) &
    i=$((i + 1))
done
while :; do
    # What udev does on a distribution: a CPU that vcpu-set made present again is brought online.
    for c in /sys/devices/system/cpu/cpu[0-9]*/online; do
        [ "$(/bin/busybox cat "$c" 2>/dev/null)" = 0 ] && echo 1 >"$c" 2>/dev/null
    done
    echo "KEEL-DOMU-TICK: up=$(/bin/busybox cut -d. -f1 /proc/uptime)" \
        "cpus=$(/bin/busybox cat /sys/devices/system/cpu/online)" \
        "mem=$(/bin/busybox awk '/^MemTotal:/ { print $2 }' /proc/meminfo)"
    /bin/busybox sleep 1
done
EOF
    cat >/tmp/domu/sbin/poweroff <<'EOF'
#!/bin/busybox sh
echo "KEEL-DOMU: powering off" >/dev/hvc0
exec /bin/busybox poweroff -f
EOF
    cat >/tmp/domu/sbin/reboot <<'EOF'
#!/bin/busybox sh
echo "KEEL-DOMU: rebooting" >/dev/hvc0
exec /bin/busybox reboot -f
EOF
    chmod +x /tmp/domu/init /tmp/domu/sbin/poweroff /tmp/domu/sbin/reboot
    (cd /tmp/domu && find . | cpio -o -H newc 2>/dev/null | gzip -1) >"$DOMU_INITRD"
}

# domu_cfg NAME [LINE ...]: writes /tmp/NAME.cfg for a 2-vCPU, 256 MiB domU (the lines given are appended, and a
# later key overrides an earlier one as in xl) and prints its path.
domu_cfg() {
    name=$1
    shift
    domu_initrd
    {
        echo "name = \"$name\""
        echo 'type = "pvh"'
        echo "kernel = \"$DOMU_KERNEL\""
        echo "ramdisk = \"$DOMU_INITRD\""
        echo 'extra = "console=hvc0"'
        echo 'memory = 256'
        echo 'vcpus = 2'
        for line in "$@"; do echo "$line"; done
    } >"/tmp/$name.cfg"
    echo "/tmp/$name.cfg"
}

# domu_log NAME: the domU's console log.
domu_log() { echo "/var/log/xen/console/guest-$1.log"; }

# domu_count NAME PATTERN: lines of its console log matching PATTERN (grep -E).
domu_count() {
    n=$(grep -a -c -E "$2" "$(domu_log "$1")" 2>/dev/null)
    echo "${n:-0}"
}

# domu_wait NAME PATTERN SECONDS [COUNT]: waits until COUNT (default 1) lines of its console log match PATTERN;
# fails after SECONDS.
domu_wait() {
    want=${4:-1}
    tries=$(($3 * 4))
    while [ "$tries" -gt 0 ]; do
        [ "$(domu_count "$1" "$2")" -ge "$want" ] && return 0
        tries=$((tries - 1))
        sleep 0.25
    done
    return 1
}

# domu_last_tick NAME: its last KEEL-DOMU-TICK line, without the tag.
domu_last_tick() { grep -a 'KEEL-DOMU-TICK: ' "$(domu_log "$1")" 2>/dev/null | tail -n 1 | tr -d '\r' | sed 's/.*KEEL-DOMU-TICK: //'; }

# domu_free: free pages as the hypervisor counts them.
domu_free() { keel-devcheck free; }
