#!/bin/sh
# /bin/toolbench (xtask/assets/toolbench.sh), for `cargo xtask bench --vs-xen`: wall time of the toolstack's
# read-only commands in dom0, `toolbench <tool> [runs]` (Keel: `xm`, from /etc/init.d/S99keel's bench mode; Xen:
# `xl`, from /xen-init). Each of `<tool> list` and `<tool> info` runs `runs` times (default 20) back to back, its
# output discarded, timed by /proc/uptime (10 ms resolution over the whole loop); one line each:
#   KEEL-BENCH: toolstack tool=<tool> cmd=<list|info> runs=<n> us=<microseconds per run> status=<last exit status>
# Outside a control domain (Xen's domU boots the same initramfs) it does nothing.
grep -q control_d /proc/xen/capabilities 2>/dev/null || exit 0
tool=${1:-xm}
runs=${2:-20}
# /proc/uptime's first field in hundredths of a second.
centis() {
    read -r up _ </proc/uptime
    # `1xx - 100`: the hundredths without a leading 0 that would make them octal.
    echo $((${up%.*} * 100 + 1${up#*.} - 100))
}
for cmd in list info; do
    start=$(centis)
    i=0
    while [ "$i" -lt "$runs" ]; do
        "$tool" "$cmd" >/dev/null 2>&1
        status=$?
        i=$((i + 1))
    done
    end=$(centis)
    echo "KEEL-BENCH: toolstack tool=$tool cmd=$cmd runs=$runs us=$(((end - start) * 10000 / runs)) status=$status"
done
