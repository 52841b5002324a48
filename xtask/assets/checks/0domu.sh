# Helpers for the checks that build domUs: Debian's stock kernel as a PVH domU, and a tiny hand-made PVH guest.
# They only define functions and run nothing: a check calls `domu_available` first, because only the xl test's initramfs carries the
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
# A check's own work (domu_initrd_task), beside the ticks.
[ -x /task ] && /task &
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

# domu_initrd_task NAME TASK: prints the path of a variant of the domU initrd whose init also runs the script
# TASK (a file) as /task in the background, with the modules dom0 carries for domUs (the Xen frontends, ext4) in
# /lib/modules (their load order in /lib/modules/order) and /lib/task.sh: `task_setup` installs every busybox
# applet and loads the modules, `task_wait PATH` waits up to 20 s for a device.
domu_initrd_task() {
    domu_initrd
    out=/tmp/domu-$1.cpio.gz
    rm -rf "/tmp/domu-$1" && cp -a /tmp/domu "/tmp/domu-$1" && mkdir -p "/tmp/domu-$1/lib/modules"
    cp /usr/lib/keel/domu-modules/* "/tmp/domu-$1/lib/modules/" 2>/dev/null
    cp "$2" "/tmp/domu-$1/task" && chmod +x "/tmp/domu-$1/task"
    # What every task starts with: `. /lib/task.sh; task_setup`, then `task_wait PATH` for a device to appear.
    cat >"/tmp/domu-$1/lib/task.sh" <<'EOF'
task_setup() {
    /bin/busybox mkdir -p /usr/bin /usr/sbin /tmp
    /bin/busybox --install -s
    for m in $(cat /lib/modules/order); do insmod /lib/modules/$m.ko 2>/dev/null; done
}
task_wait() {
    n=0
    while [ $n -lt 200 ] && ! [ -e "$1" ]; do
        n=$((n + 1))
        sleep 0.1
    done
}
EOF
    (cd "/tmp/domu-$1" && find . | cpio -o -H newc 2>/dev/null | gzip -1) >"$out"
    rm -rf "/tmp/domu-$1"
    echo "$out"
}

# nc_sink PORT FILE: a TCP listener on PORT that writes what it receives to FILE, in the background ($nc_pid). Its
# input is a FIFO this shell holds open until nc_sink_stop: busybox nc stops reading the connection once its own
# input ends, which for a background job would be at once (its input is /dev/null).
nc_sink() {
    rm -f /tmp/nc-sink.in && mkfifo /tmp/nc-sink.in
    nc -l -p "$1" </tmp/nc-sink.in >"$2" &
    nc_pid=$!
    exec 8>/tmp/nc-sink.in
}
nc_sink_stop() {
    exec 8>&-
    kill "$nc_pid" 2>/dev/null
    rm -f /tmp/nc-sink.in
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

# test_guest_lines ID: domain ID's console_io lines in Keel's log (a test guest of tests/guests speaks through
# console_io, which `xm dmesg` shows as "(dID) ..."), without Keel's prefix.
test_guest_lines() { xm dmesg 2>/dev/null | tr -d '\r' | grep -a "(d$1) " | sed "s/.*(d$1) //"; }

# test_guest_run NAME CFG TAG: `xm create CFG` of test guest NAME (a domU whose config powers it off when done);
# waits up to 3 minutes for its `Test result:` line and prints `KEEL-CHECK: TAG-create`, its `TAG-guest` lines,
# `TAG-result` and whether it was gone after its power-off (`TAG-gone`); destroys it if it is still there.
test_guest_run() {
    out=$(xm create "$2" 2>&1)
    echo "KEEL-CHECK: $3-create $out"
    id=$(echo "$out" | sed -n "s/^Started domain $1 (id=\([0-9]*\))\$/\1/p")
    [ -n "$id" ] || return 0
    n=0
    while [ $n -lt 1200 ] && ! test_guest_lines "$id" | grep -q '^Test result: '; do
        n=$((n + 1))
        sleep 0.25
    done
    test_guest_lines "$id" | grep -a -E '^(hostile: |Test result: |Failure: |Error: |PANIC)' |
        sed "s/^/KEEL-CHECK: $3-guest /"
    echo "KEEL-CHECK: $3-result $(test_guest_lines "$id" | sed -n 's/^Test result: //p' | tail -n 1)"
    # Powered off, the monitor destroys it (on_poweroff=destroy).
    n=0
    while [ $n -lt 150 ] && xm domid "$1" >/dev/null 2>&1; do
        n=$((n + 1))
        sleep 0.2
    done
    echo "KEEL-CHECK: $3-gone $(xm domid "$1" >/dev/null 2>&1 && echo no || echo yes)"
    xm destroy "$1" >/dev/null 2>&1
    return 0
}

# domu_wait_gone NAME: waits up to 30 s for domain NAME to go (a guest that powered off is destroyed by its
# monitor, on_poweroff=destroy).
domu_wait_gone() {
    n=0
    while [ $n -lt 150 ] && xm domid "$1" >/dev/null 2>&1; do
        n=$((n + 1))
        sleep 0.2
    done
}

# domu_log NAME: the domU's console log.
# domu_counter_script TAG: prints the end of a domU task (busybox sh): a tight loop reading /proc/uptime that
# prints `TAG: n=<count> gap=<the longest time between two of its reads in the last second, centiseconds>` once a
# second. n goes on only if the process survives (a save or a migration); gap is the guest's own view of a
# downtime.
domu_counter_script() {
    sed "s/@TAG@/$1/" <<'EOF'
n=0
read up _ </proc/uptime
last=$((${up%.*} * 100 + 1${up#*.} - 100))
shown=$last
gap=0
while :; do
    read up _ </proc/uptime
    now=$((${up%.*} * 100 + 1${up#*.} - 100))
    d=$((now - last))
    [ $d -gt $gap ] && gap=$d
    last=$now
    n=$((n + 1))
    if [ $((now - shown)) -ge 100 ]; then
        echo "@TAG@: n=$n gap=$gap"
        shown=$now
        gap=0
    fi
done
EOF
}

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

# tiny_guest: writes create.sh's 450-byte hand-made PVH guest (an ELF64 with one PT_LOAD at 0x100000 and
# XEN_ELFNOTE_PHYS32_ENTRY 0x100000) to stdout. It says hello through console_io, writes `data/tiny` = `ran` on its
# xenstore ring, signals its store event channel and blocks in a loop (0x100061..0x100072); its message is at
# physical 0x10008c. create.sh and domu-dumpcore.sh run it.
#
# The guest's source (GNU as, --32; Keel's hypercall arguments are in edi, esi, edx):
#           .code32
#           .set BASE, 0x100000
#           .set RING, 0xfeffc000
#   start:
#           mov $18, %eax                   # console_io
#           mov $0, %edi                    # CONSOLEIO_write
#           mov $(msg_end - msg), %esi
#           mov $(BASE + msg - start), %edx
#           vmmcall
#           mov $34, %eax                   # hvm_op
#           mov $1, %edi                    # HVMOP_get_param
#           mov $(BASE + param - start), %esi
#           vmmcall
#           mov $(BASE + req - start), %esi
#           mov $RING, %edi
#           mov $(req_end - req), %ecx
#           cld
#           rep movsb
#           movl $(req_end - req), RING + 2052   # req_prod
#           mov (BASE + param - start + 8), %eax
#           mov %eax, (BASE + send - start)
#           mov $32, %eax                   # event_channel_op
#           mov $4, %edi                    # EVTCHNOP_send
#           mov $(BASE + send - start), %esi
#           vmmcall
#   1:      mov $29, %eax                   # sched_op
#           mov $1, %edi                    # SCHEDOP_block
#           xor %esi, %esi
#           vmmcall
#           jmp 1b
#           .balign 8
#   param:  .short 0x7ff0, 0                # DOMID_SELF
#           .long 2                         # HVM_PARAM_STORE_EVTCHN
#           .quad 0
#   send:   .long 0
#   msg:    .ascii "keel-tiny-guest: running\n"
#   msg_end:
#   req:    .long 11, 1, 0, (req_end - req - 16)   # XS_WRITE
#           .ascii "data/tiny\0ran"
#   req_end:
tiny_guest() {
    printf '\177\105\114\106\002\001\001\000\000\000\000\000\000\000\000\000\002\000\076\000\001\000\000\000\000\000\020\000\000\000\000\000'
    printf '\100\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\100\000\070\000\002\000\000\000\000\000\000\000'
    printf '\001\000\000\000\007\000\000\000\000\001\000\000\000\000\000\000\000\000\020\000\000\000\000\000\000\000\020\000\000\000\000\000'
    printf '\302\000\000\000\000\000\000\000\000\020\000\000\000\000\000\000\000\001\000\000\000\000\000\000\004\000\000\000\004\000\000\000'
    printf '\260\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\024\000\000\000\000\000\000\000'
    printf '\024\000\000\000\000\000\000\000\004\000\000\000\000\000\000\000\004\000\000\000\004\000\000\000\022\000\000\000\130\145\156\000'
    printf '\000\000\020\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000'
    printf '\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000'
    printf '\270\022\000\000\000\277\000\000\000\000\276\031\000\000\000\272\214\000\020\000\017\001\331\270\042\000\000\000\277\001\000\000'
    printf '\000\276\170\000\020\000\017\001\331\276\245\000\020\000\277\000\300\377\376\271\035\000\000\000\374\363\244\307\005\004\310\377'
    printf '\376\035\000\000\000\241\200\000\020\000\243\210\000\020\000\270\040\000\000\000\277\004\000\000\000\276\210\000\020\000\017\001'
    printf '\331\270\035\000\000\000\277\001\000\000\000\061\366\017\001\331\353\357\215\266\000\000\000\000\360\177\000\000\002\000\000\000'
    printf '\000\000\000\000\000\000\000\000\000\000\000\000\153\145\145\154\055\164\151\156\171\055\147\165\145\163\164\072\040\162\165\156'
    printf '\156\151\156\147\012\013\000\000\000\001\000\000\000\000\000\000\000\015\000\000\000\144\141\164\141\057\164\151\156\171\000\162'
    printf '\141\156'
}
