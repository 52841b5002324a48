# /etc/keel/checks.d/xm.sh (xtask/assets/checks/xm.sh), sourced by S99keel in keel.init=checks mode: xm's
# host-level commands against the hypervisor, as tests/tests/linux.rs asserts them. Lines are tagged KEEL-XM-*;
# JSON outputs travel base64-encoded (KEEL-XM-JSON <name> <chunk>) so that the host parses exactly what xm printed
# and no console text inside them (xm dmesg) is mistaken for a line of this boot.

# xm_json NAME ARGS...: runs `xm ARGS... --json`, sends its stdout (base64) and exit status.
xm_json() {
    xm_json_name=$1
    shift
    xm "$@" --json >/tmp/xm-check.json 2>/dev/null
    echo "KEEL-XM-JSON-RC: $xm_json_name $?"
    base64 </tmp/xm-check.json | sed "s/^/KEEL-XM-JSON $xm_json_name /"
}

# Text forms, one tag per command.
xm list -l 0 2>&1 | sed 's/^/KEEL-XM-LONG: /'
xm vcpu-list 2>&1 | sed 's/^/KEEL-XM-VCPUS: /'
xm uptime 2>&1 | sed 's/^/KEEL-XM-UPTIME: /'
echo "KEEL-XM: domid $(xm domid Domain-0 2>&1)"
echo "KEEL-XM: domname $(xm domname 0 2>&1)"
xm sched-credit 2>&1 | sed 's/^/KEEL-XM-SCHED: /'

# A domain that does not exist, by name and by id: a clear error and a failing status.
xm_out=$(xm list nosuch 2>&1)
echo "KEEL-XM: unknown-name rc=$? $xm_out"
xm_out=$(xm vcpu-list 999 2>&1)
echo "KEEL-XM: unknown-id rc=$? $xm_out"
xm_out=$(xm vnet-list 2>&1)
echo "KEEL-XM: vnet-list rc=$? $xm_out"
xm_out=$(xm create /etc/xen/guest.cfg 2>&1)
echo "KEEL-XM: create rc=$? $xm_out"
xm log >/dev/null 2>&1
echo "KEEL-XM: log rc=$?"

# Credit weight and cap of dom0: set, read back, restore.
xm sched-credit -d 0 -w 512 && xm sched-credit -d 0 -c 150
echo "KEEL-XM: sched-set rc=$?"
xm sched-credit -d 0 2>&1 | sed 's/^/KEEL-XM-SCHED-SET: /'
xm sched-credit -d Domain-0 -w 256 -c 0
# The global time slice: set 10 ms, read back, restore what it was.
xm_tslice=$(xm sched-credit -s | sed -n 's/.*tslice=\([0-9]*\)ms.*/\1/p')
xm sched-credit -s -t 10
echo "KEEL-XM: tslice-set rc=$? $(xm sched-credit -s 2>&1)"
xm sched-credit -s -t "${xm_tslice:-30}"

# vcpu-pin: dom0's vCPU 1 to CPU 0 (hard), then busy on vCPU 1: where the hypervisor says it runs.
xm vcpu-pin 0 1 0
echo "KEEL-XM: pin rc=$?"
xm vcpu-list 0 2>&1 | sed 's/^/KEEL-XM-PINNED: /'
taskset -c 1 sh -c 'i=0; while [ $i -lt 400000 ]; do i=$((i + 1)); done' &
xm_busy=$!
for xm_n in 1 2 3; do
    sleep 1
    echo "KEEL-XM: pinned-cpu $(xm vcpu-list 0 | awk '$3 == 1 { print $4 }')"
done
kill "$xm_busy" 2>/dev/null
wait "$xm_busy" 2>/dev/null
# `all` vCPUs back to every CPU, soft affinity too.
xm vcpu-pin Domain-0 all all all
echo "KEEL-XM: unpin rc=$?"
xm vcpu-list 0 2>&1 | sed 's/^/KEEL-XM-UNPINNED: /'

# xentop's batch mode: two frames, a second apart.
xm top -b -i 2 -d 1 2>&1 | sed 's/^/KEEL-XM-TOP: /'

# Every command's JSON.
xm_json info info
xm_json list list
xm_json list-long list -l
xm_json domid domid Domain-0
xm_json domname domname 0
xm_json uptime uptime
xm_json vcpu-list vcpu-list
xm_json vcpu-pin vcpu-pin 0 all all
xm_json sched-credit sched-credit
xm_json sched-credit-d sched-credit -d 0
xm_json sched-credit-s sched-credit -s
xm_json top top -b -i 2 -d 1
xm_json log log
xm_json vnet-list vnet-list
xm_json unknown list nosuch
xm_json dmesg dmesg

# Last (it empties the hypervisor's ring for whoever reads it next): dmesg -c prints, then nothing is left of it.
echo "KEEL-XM: dmesg-c $(xm dmesg -c | grep -c 'SVM enabled') then $(xm dmesg | grep -c 'SVM enabled')"
echo "KEEL-XM: done"
