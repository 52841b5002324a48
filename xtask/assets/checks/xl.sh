# /etc/keel/checks.d/xl.sh (xtask/assets/checks/xl.sh): Debian's stock Xen 4.17 tools, unchanged, against Keel
# and dom0's own xenstored, next to what `xm` says of the same things; tests/tests/xl.rs compares them. Only the
# initramfs of `cargo xtask test`'s xl test carries the tools (xtask/src/xen.rs, stock_tools_initramfs): without
# them this does nothing.
#
# Each tool's output goes out with a tag of its own, `KEEL-XL-<WHAT>: <line>`, then `KEEL-XL-RC: <WHAT> <exit status>`.
# XL_VERBOSE (e.g. "-vvv") is passed to every xl command, for debugging.

XL=/usr/lib/xen-4.17/bin/xl
XSLS=/usr/lib/xen-4.17/bin/xenstore-ls
if [ -x "$XL" ]; then
    # <WHAT> <command...>: runs the command, its output and exit status tagged.
    xl_tagged() {
        what=$1
        shift
        "$@" >/tmp/xl-check.out 2>&1
        rc=$?
        sed "s/^/KEEL-XL-$what: /" /tmp/xl-check.out
        echo "KEEL-XL-RC: $what $rc"
    }
    xl_tagged INFO "$XL" $XL_VERBOSE info
    xl_tagged XM-INFO xm info
    xl_tagged LIST "$XL" $XL_VERBOSE list
    xl_tagged XM-LIST xm list
    # The console ring is long: its SVM lines (one per CPU) and whether both tools read the same first lines.
    "$XL" $XL_VERBOSE dmesg >/tmp/xl-dmesg.out 2>&1
    echo "KEEL-XL-RC: DMESG $?"
    xm dmesg >/tmp/xm-dmesg.out 2>&1
    echo "KEEL-XL-DMESG: svm-lines $(grep -c 'SVM enabled' /tmp/xl-dmesg.out) bytes $(wc -c </tmp/xl-dmesg.out)"
    echo "KEEL-XL-XM-DMESG: svm-lines $(grep -c 'SVM enabled' /tmp/xm-dmesg.out) bytes $(wc -c </tmp/xm-dmesg.out)"
    if [ "$(head -n 20 /tmp/xl-dmesg.out)" = "$(head -n 20 /tmp/xm-dmesg.out)" ]; then
        echo "KEEL-XL-DMESG: head same"
    else
        echo "KEEL-XL-DMESG: head differs"
        head -n 5 /tmp/xl-dmesg.out | sed 's/^/KEEL-XL-DMESG: xl: /'
    fi
    rm -f /tmp/xl-dmesg.out /tmp/xm-dmesg.out
    xl_tagged VCPU "$XL" $XL_VERBOSE vcpu-list
    xl_tagged XM-VCPU xm vcpu-list
    # Hard affinity set through xl shows in both tools' vcpu-list; then every CPU again.
    xl_tagged PIN "$XL" $XL_VERBOSE vcpu-pin 0 1 0
    xl_tagged VCPU-PINNED "$XL" $XL_VERBOSE vcpu-list 0
    xl_tagged XM-VCPU-PINNED xm vcpu-list 0
    "$XL" vcpu-pin 0 1 all >/dev/null 2>&1
    xl_tagged INFO-N "$XL" $XL_VERBOSE info -n
    xl_tagged UPTIME "$XL" $XL_VERBOSE uptime
    xl_tagged DOMID "$XL" $XL_VERBOSE domid Domain-0
    xl_tagged SCHED "$XL" $XL_VERBOSE sched-credit
    xl_tagged XM-SCHED xm sched-credit
    # A weight set with one tool reads back through the other, both ways; then the default again.
    xl_tagged SCHED-SET "$XL" $XL_VERBOSE sched-credit -d 0 -w 512
    xl_tagged XM-SCHED-AFTER-XL xm sched-credit -d 0
    xl_tagged XM-SCHED-SET xm sched-credit -d 0 -w 384
    xl_tagged SCHED-AFTER-XM "$XL" $XL_VERBOSE sched-credit -d 0
    "$XL" sched-credit -d 0 -w 256 >/dev/null 2>&1
    # The pool's time slice (sysctl scheduler_op): set through xl, read back by xl and xm; then Keel's 30 ms again.
    xl_tagged SCHED-SLICE-SET "$XL" $XL_VERBOSE sched-credit -s -t 20
    xl_tagged SCHED-SLICE "$XL" $XL_VERBOSE sched-credit -s
    xl_tagged XM-SCHED-SLICE xm sched-credit -s
    "$XL" sched-credit -s -t 30 >/dev/null 2>&1
    xl_tagged XSLS "$XSLS" /local/domain/0
    xl_tagged XM-XSLS xenstore-ls /local/domain/0
    xl_tagged XSLS-ALL "$XSLS"
    rm -f /tmp/xl-check.out
fi
