# on_poweroff / on_reboot / on_crash with Debian's stock kernel as a PVH domU (issue 12; dom0-tools/src/xm/monitor.rs,
# xm/onshutdown.rs): `xm create` leaves a detached monitor (process name xm-monitor, pid in
# /run/xen/xm-monitor-<id>.pid, log /var/log/xen/xl-<name>.log) that watches @releaseDomain and applies the config's
# action. Each case boots its own small domU (0domu.sh's initrd; 128 MiB, 1 vCPU) and leaves nothing behind:
#   shutdown  `xm shutdown -w` (on_poweroff=destroy): the guest's own /sbin/poweroff runs; -w returns with it gone
#   reboot    `xm reboot -w` (on_reboot=restart): its own /sbin/reboot runs; a new id, init again
#   crash     `xm sysrq c` (on_crash=restart): Linux panics and reports SHUTDOWN_crash; a new id, init again
#   preserve  `xm sysrq c` (on_crash=preserve): the domain stays in state c, unwatched, until `xm destroy`
#   coredump  `xm sysrq c` (on_crash=coredump-destroy): a dump attempted through xm dump-core's path, then destroyed
#   early     `xm destroy` a second after `xm create`, mid-boot
# One `KEEL-CHECK: lifecycle-<what> <value>` line per fact; tests/tests/xl/lifecycle.rs judges them.
#
# Linux 6.1 turns control/shutdown=reboot into orderly_reboot(), which runs /sbin/reboot (and restarts by itself,
# "Failed to start orderly reboot: forcing the issue", when there is none): the initrd here is 0domu.sh's plus a
# second cpio archive (Linux unpacks concatenated ones) with a /sbin/reboot that says `KEEL-DOMU: rebooting`.
# control/sysrq goes through the guest's sysrq mask, and Debian's default (438) lacks the crash key:
# sysrq_always_enabled on the command line.
if domu_available; then
    lc_extra='extra = "console=hvc0 sysrq_always_enabled"'
    lc_initrd=/tmp/lc-domu.cpio.gz
    domu_initrd
    rm -rf /tmp/lc-domu && mkdir -p /tmp/lc-domu/sbin
    cat >/tmp/lc-domu/sbin/reboot <<'EOF'
#!/bin/busybox sh
echo "KEEL-DOMU: rebooting" >/dev/hvc0
exec /bin/busybox reboot -f
EOF
    chmod +x /tmp/lc-domu/sbin/reboot
    { cat "$DOMU_INITRD" && (cd /tmp/lc-domu && find . | cpio -o -H newc 2>/dev/null | gzip -1); } >"$lc_initrd"

    # lc_create NAME [LINE ...]: creates a fresh domU NAME; sets lc_out (xm create's output), lc_id and lc_mon
    # (its monitor's pid).
    lc_create() {
        lc_name=$1
        shift
        rm -f "$(domu_log "$lc_name")" "/var/log/xen/xl-$lc_name.log"
        domu_cfg "$lc_name" 'memory = 128' 'vcpus = 1' "$lc_extra" "ramdisk = \"$lc_initrd\"" "$@" >/dev/null
        lc_out=$(xm create "/tmp/$lc_name.cfg" 2>&1)
        lc_id=$(echo "$lc_out" | sed -n "s/^Started domain $lc_name (id=\([0-9]*\))\$/\1/p")
        lc_n=0
        while [ -n "$lc_id" ] && [ $lc_n -lt 40 ] && [ ! -s "/run/xen/xm-monitor-$lc_id.pid" ]; do
            lc_n=$((lc_n + 1))
            sleep 0.05
        done
        lc_mon=$(cat "/run/xen/xm-monitor-$lc_id.pid" 2>/dev/null)
    }

    # lc_alive PID: whether PID is a running monitor.
    lc_alive() { [ -n "$1" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = xm-monitor ]; }

    # lc_gone PID: "exited" once the monitor PID has ended (waiting up to 10 s), else "running".
    lc_gone() {
        lc_n=0
        while [ $lc_n -lt 40 ] && lc_alive "$1"; do
            lc_n=$((lc_n + 1))
            sleep 0.25
        done
        lc_alive "$1" && echo running || echo exited
    }

    # lc_free_back: "yes" once free memory is back to what it was before the first domU (up to 10 s).
    lc_free_back() {
        lc_n=0
        while [ $lc_n -lt 100 ] && [ "$(domu_free)" != "$lc_free0" ]; do
            lc_n=$((lc_n + 1))
            sleep 0.1
        done
        lc_f=$(domu_free)
        [ "$lc_f" = "$lc_free0" ] && echo yes || echo "no($lc_free0/$lc_f)"
    }

    # lc_nodes ID: how many /local/domain/ID nodes are left (0 or 1).
    lc_nodes() { xenstore-list /local/domain 2>/dev/null | grep -c "^$1\$"; }

    # lc_state NAME: its id and state letters in `xm list`.
    lc_state() { xm list 2>/dev/null | awk -v n="$1" '$1 == n { print $2, $5 }'; }

    lc_free0=$(domu_free)

    # 1. xm shutdown -w, on_poweroff=destroy.
    lc_create lc-off 'on_poweroff = "destroy"'
    echo "KEEL-CHECK: lifecycle-create $lc_out"
    domu_wait lc-off 'KEEL-DOMU: init reached' 180
    echo "KEEL-CHECK: lifecycle-monitor $(lc_alive "$lc_mon" && echo running || echo "none(pid=$lc_mon)")" \
        "log=$(grep -c "Waiting for domain lc-off (domid $lc_id) to die" /var/log/xen/xl-lc-off.log 2>/dev/null)"
    lc_w=$(timeout 150 xm shutdown -w lc-off 2>&1)
    lc_rc=$?
    echo "KEEL-CHECK: lifecycle-shutdown-wait rc=$lc_rc last=$(echo "$lc_w" | tail -n 1)"
    echo "KEEL-CHECK: lifecycle-shutdown-console $(domu_count lc-off 'KEEL-DOMU: powering off')"
    echo "KEEL-CHECK: lifecycle-shutdown-gone listed=$(xm list 2>/dev/null | grep -c '^lc-off ') nodes=$(lc_nodes "$lc_id")" \
        "free=$(lc_free_back) monitor=$(lc_gone "$lc_mon")"
    echo "KEEL-CHECK: lifecycle-shutdown-log $(grep -c 'Action for shutdown reason code 0 is destroy' /var/log/xen/xl-lc-off.log 2>/dev/null)"

    # 2. xm reboot -w, on_reboot=restart: a new id, the same name and monitor, init again.
    lc_create lc-reboot 'on_reboot = "restart"'
    domu_wait lc-reboot 'KEEL-DOMU: init reached' 180
    lc_old=$lc_id
    lc_w=$(timeout 150 xm reboot -w lc-reboot 2>&1)
    lc_rc=$?
    echo "KEEL-CHECK: lifecycle-reboot-wait rc=$lc_rc old-listed=$(xm list 2>/dev/null | awk -v i="$lc_old" '$2 == i' | grep -c .)" \
        "last=$(echo "$lc_w" | tail -n 1)"
    domu_wait lc-reboot 'KEEL-DOMU: init reached' 180 2
    lc_new=$(xm domid lc-reboot 2>/dev/null)
    echo "KEEL-CHECK: lifecycle-reboot-ids old=$lc_old new=${lc_new:-none} old-nodes=$(lc_nodes "$lc_old")" \
        "same-monitor=$([ "$(cat "/run/xen/xm-monitor-$lc_new.pid" 2>/dev/null)" = "$lc_mon" ] && lc_alive "$lc_mon" && echo yes || echo no)"
    echo "KEEL-CHECK: lifecycle-reboot-console rebooting=$(domu_count lc-reboot 'KEEL-DOMU: rebooting')" \
        "init=$(domu_count lc-reboot 'KEEL-DOMU: init reached')"
    # What the guest said about its reboot, for the log (`KEEL-LC-LOG:` lines; not judged).
    grep -a -E 'KEEL-DOMU: (init|rebooting)|reboot:' "$(domu_log lc-reboot)" 2>/dev/null |
        head -n 12 | tr -d '\r' | sed 's/^/KEEL-LC-LOG: /'
    echo "KEEL-CHECK: lifecycle-reboot-log $(grep -c 'Action for shutdown reason code 1 is restart' /var/log/xen/xl-lc-reboot.log 2>/dev/null)"
    xm destroy lc-reboot >/dev/null 2>&1
    echo "KEEL-CHECK: lifecycle-reboot-destroyed listed=$(xm list 2>/dev/null | grep -c '^lc-reboot ') nodes=$(lc_nodes "$lc_new")" \
        "free=$(lc_free_back) monitor=$(lc_gone "$lc_mon")"

    # 3. A crash (sysrq c), on_crash=restart.
    lc_create lc-crash 'on_crash = "restart"'
    domu_wait lc-crash 'KEEL-DOMU: init reached' 180
    lc_old=$lc_id
    xm sysrq lc-crash c >/dev/null 2>&1
    domu_wait lc-crash 'KEEL-DOMU: init reached' 180 2
    lc_new=$(xm domid lc-crash 2>/dev/null)
    echo "KEEL-CHECK: lifecycle-crash-restart old=$lc_old new=${lc_new:-none} init=$(domu_count lc-crash 'KEEL-DOMU: init reached')" \
        "old-nodes=$(lc_nodes "$lc_old")"
    echo "KEEL-CHECK: lifecycle-crash-log $(grep -c 'Action for shutdown reason code 3 is restart' /var/log/xen/xl-lc-crash.log 2>/dev/null)"
    xm destroy lc-crash >/dev/null 2>&1
    echo "KEEL-CHECK: lifecycle-crash-destroyed listed=$(xm list 2>/dev/null | grep -c '^lc-crash ') nodes=$(lc_nodes "$lc_new")" \
        "free=$(lc_free_back) monitor=$(lc_gone "$lc_mon")"

    # 4. A crash, on_crash=preserve: kept in state c, no longer watched, until xm destroy.
    lc_create lc-keep 'on_crash = "preserve"'
    domu_wait lc-keep 'KEEL-DOMU: init reached' 180
    xm sysrq lc-keep c >/dev/null 2>&1
    lc_n=0
    while [ $lc_n -lt 240 ]; do
        case "$(lc_state lc-keep)" in *c*) break ;; esac
        lc_n=$((lc_n + 1))
        sleep 0.25
    done
    lc_monitor=$(lc_gone "$lc_mon")
    sleep 2
    echo "KEEL-CHECK: lifecycle-preserve-state id=$lc_id now=$(lc_state lc-keep) monitor=$lc_monitor"
    echo "KEEL-CHECK: lifecycle-preserve-log $(grep -c 'Action for shutdown reason code 3 is preserve' /var/log/xen/xl-lc-keep.log 2>/dev/null)"
    xm destroy lc-keep >/dev/null 2>&1
    echo "KEEL-CHECK: lifecycle-preserve-destroyed listed=$(xm list 2>/dev/null | grep -c '^lc-keep ') nodes=$(lc_nodes "$lc_id")" \
        "free=$(lc_free_back)"

    # 5. A crash, on_crash=coredump-destroy: the monitor dumps through xm dump-core's path to
    # /var/lib/xen/dump/<name>, and destroys the domain whether or not the dump worked (a failure is logged).
    lc_create lc-dump 'on_crash = "coredump-destroy"'
    domu_wait lc-dump 'KEEL-DOMU: init reached' 180
    rm -f /var/lib/xen/dump/lc-dump
    xm sysrq lc-dump c >/dev/null 2>&1
    lc_monitor=$(lc_gone "$lc_mon")
    lc_xl=/var/log/xen/xl-lc-dump.log
    echo "KEEL-CHECK: lifecycle-coredump listed=$(xm list 2>/dev/null | grep -c '^lc-dump ') nodes=$(lc_nodes "$lc_id")" \
        "free=$(lc_free_back) monitor=$lc_monitor" \
        "dumped=$(grep -c 'dumping core to /var/lib/xen/dump/lc-dump' $lc_xl 2>/dev/null)" \
        "destroyed=$(grep -c "Domain $lc_id needs to be cleaned up: destroying the domain" $lc_xl 2>/dev/null)"
    # The dump itself: the core file the monitor wrote.
    echo "KEEL-CHECK: lifecycle-coredump-file $([ -s /var/lib/xen/dump/lc-dump ] && echo "bytes=$(wc -c </var/lib/xen/dump/lc-dump)" ||
        grep -a 'core dump failed' $lc_xl 2>/dev/null | head -n 1)"
    rm -f /var/lib/xen/dump/lc-dump

    # 6. xm destroy mid-boot.
    lc_create lc-early
    sleep 1
    lc_out=$(xm destroy lc-early 2>&1)
    lc_rc=$?
    echo "KEEL-CHECK: lifecycle-early rc=$lc_rc$([ -n "$lc_out" ] && echo " $lc_out") booted=$(domu_count lc-early 'KEEL-DOMU: init reached')" \
        "listed=$(xm list 2>/dev/null | grep -c '^lc-early ') nodes=$(lc_nodes "$lc_id") free=$(lc_free_back)" \
        "monitor=$(lc_gone "$lc_mon")"

    lc_left=0
    for lc_c in /proc/[0-9]*/comm; do
        [ "$(cat "$lc_c" 2>/dev/null)" = xm-monitor ] && lc_left=$((lc_left + 1))
    done
    echo "KEEL-CHECK: lifecycle-monitors-left $lc_left"
fi
