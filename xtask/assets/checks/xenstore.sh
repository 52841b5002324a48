# /etc/keel/checks.d/xenstore.sh (xtask/assets/checks/xenstore.sh), sourced by S99keel in keel.init=checks mode:
# dom0's kernel reaches dom0's xenstored through its own XS_LOCAL ring, as on Xen (Keel has no store of its own).
# tests/tests/linux.rs asserts these lines.

xs_log=/var/log/xen/xenstored.log
# The kernel's port for the store (EVTCHNOP_alloc_unbound to itself): non-zero in XS_LOCAL mode.
echo "KEEL-CHECK: xsd_port $(cat /proc/xen/xsd_port 2>/dev/null || echo none)"
# The kernel's xenbus probe ran once xenstored signalled the ring: its backend bus then watches `backend`.
n=0
while [ $n -lt 50 ] && ! grep -q "domain 0 watches backend" "$xs_log" 2>/dev/null; do
    n=$((n + 1))
    sleep 0.1
done
if grep -q "domain 0 watches backend" "$xs_log" 2>/dev/null; then
    echo "KEEL-CHECK: xenbus-probe done"
else
    echo "KEEL-CHECK: xenbus-probe missing: $(tail -n 5 "$xs_log" 2>&1 | tr '\n' '|')"
fi
# Through the socket in, through the kernel's /dev/xen/xenbus (the ring) out, and the other way round.
xenstore-write /keel/xs-ring socket-to-kernel
echo "KEEL-CHECK: xenstore-kernel-read $(XENSTORED_PATH=/dev/xen/xenbus timeout 10 xenstore-read /keel/xs-ring 2>&1)"
XENSTORED_PATH=/dev/xen/xenbus timeout 10 xenstore-write /keel/xs-ring2 kernel-to-socket
echo "KEEL-CHECK: xenstore-socket-read $(xenstore-read /keel/xs-ring2 2>&1)"
# A watch through the kernel path: its initial event, then the one a socket client's write fires.
rm -f /tmp/xs-watch.out
XENSTORED_PATH=/dev/xen/xenbus timeout 10 xenstore-watch -n 2 /keel/xs-watch >/tmp/xs-watch.out 2>&1 &
watcher=$!
n=0
while [ $n -lt 50 ] && [ ! -s /tmp/xs-watch.out ]; do
    n=$((n + 1))
    sleep 0.1
done
xenstore-write /keel/xs-watch/fired 1
wait $watcher
echo "KEEL-CHECK: xenstore-kernel-watch $(tr '\n' ' ' </tmp/xs-watch.out)"
# The kernel's complaints about xenbus, if any (errors, timeouts, failures).
echo "KEEL-CHECK: xenbus-errors $(dmesg | grep -i xenbus | grep -c -i -E 'error|timeout|fail')"
dmesg | grep -i xenbus | grep -i -E 'error|timeout|fail' | sed 's/^/KEEL-XENBUS: /'
