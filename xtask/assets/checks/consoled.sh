# dom0's xenconsoled (issue 12; dom0-tools/consoled), started by S30xencommons after xenstored with --log=guest:
# it runs detached with its pid in /run/xenconsoled.pid, watches @introduceDomain/@releaseDomain, logs no
# errors, and has its guest log directory; `xm console` of an unknown domain and of dom0 (no console/tty) fail
# with one clear line. tests/tests/linux.rs asserts these lines.
if [ -f /run/xenconsoled.pid ] && kill -0 "$(cat /run/xenconsoled.pid)" 2>/dev/null; then
    echo "KEEL-CHECK: xenconsoled running"
else
    echo "KEEL-CHECK: xenconsoled not-running: $(cat /var/log/xen/xenconsoled.log 2>/dev/null | tail -n 3 | tr '\n' ' ')"
fi
# Its first log line comes once its watches are registered (a moment after it detached).
n=0
while [ $n -lt 20 ] && ! grep -q "watching @introduceDomain" /var/log/xen/xenconsoled.log 2>/dev/null; do
    n=$((n + 1))
    sleep 0.1
done
echo "KEEL-CHECK: xenconsoled watching $(grep -c "watching @introduceDomain and @releaseDomain" /var/log/xen/xenconsoled.log 2>/dev/null)"
echo "KEEL-CHECK: xenconsoled log-errors $(grep -c -i -E "cannot|error|failed|panicked" /var/log/xen/xenconsoled.log 2>/dev/null)"
if [ -d /var/log/xen/console ]; then
    echo "KEEL-CHECK: xenconsoled log-dir yes"
else
    echo "KEEL-CHECK: xenconsoled log-dir no"
fi
echo "KEEL-CHECK: xm-console-unknown $(xm console nosuchdomain </dev/null 2>&1 | head -n 1)"
echo "KEEL-CHECK: xm-console-dom0 $(xm console 0 </dev/null 2>&1 | head -n 1)"
# The daemon's devices on a loopback console inside dom0 (gntalloc grant mapped through gntdev, an evtchn pair).
echo "KEEL-CHECK: xenconsoled-self-check $(/usr/sbin/xenconsoled --self-check 2>&1 | head -n 1)"
