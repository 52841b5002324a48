# `xm create` of a PVH domU from dom0 (issue 12; dom0-tools/src/xm/create.rs, keel-builder, xenstored's domU rings).
# The guest is a 450-byte PVH ELF64 that 0domu.sh's tiny_guest writes (one PT_LOAD at 0x100000,
# XEN_ELFNOTE_PHYS32_ENTRY 0x100000); its 32-bit code says hello through console_io (`xm dmesg` shows it as "(dN) ..."), reads its store event channel
# (HVMOP_get_param HVM_PARAM_STORE_EVTCHN), puts an XS_WRITE of `data/tiny` = `ran` on its xenstore ring (the
# special page 0xFEFFC000), signals the channel, and then blocks. Seeing /local/domain/N/data/tiny = ran in dom0
# proves the build (memory, image, start state), the grant-seeded ring mapped by xenstored after XS_INTRODUCE,
# and the event channel. Then a duplicate name is refused, the domain is destroyed with `xm destroy` (destroydomain
# and the removal of its nodes, as libxl does), xenstored releases it (VIRQ_DOM_EXC), and free memory
# returns exactly. tests/tests/linux.rs asserts the KEEL-CHECK lines.
tiny_guest >/tmp/keel-tiny.elf
cat >/tmp/tiny.cfg <<EOF
name = "tiny"
type = "pvh"
kernel = "/tmp/keel-tiny.elf"
memory = 16
vcpus = 1
EOF
free_pages() { keel-devcheck free; }
before=$(free_pages)
out=$(xm create /tmp/tiny.cfg 2>&1)
id=$(echo "$out" | sed -n 's/^Started domain tiny (id=\([0-9]*\))$/\1/p')
if [ -n "$id" ]; then
    n=0
    while [ $n -lt 100 ] && [ "$(xenstore-read /local/domain/$id/data/tiny 2>/dev/null)" != ran ]; do
        n=$((n + 1))
        sleep 0.1
    done
    # Only now: the guest's own console line (Keel's, on the same serial line) is out by then.
    echo "KEEL-CHECK: create-output $out"
    echo "KEEL-CHECK: create-guest-xenstore $(xenstore-read /local/domain/$id/data/tiny 2>&1)"
    echo "KEEL-CHECK: create-guest-console $(xm dmesg 2>/dev/null | grep -c "(d$id) keel-tiny-guest: running")"
    echo "KEEL-CHECK: create-list $(xm list 2>&1 | awk '$1 == "tiny" { print $1, $2, $3, $4 }')"
    echo "KEEL-CHECK: create-nodes name=$(xenstore-read /local/domain/$id/name 2>&1)" \
        "target=$(xenstore-read /local/domain/$id/memory/target 2>&1)" \
        "store-port=$(xenstore-read /local/domain/$id/store/port 2>&1 | grep -c '^[0-9]')" \
        "console-type=$(xenstore-read /local/domain/$id/console/type 2>&1)" \
        "tty=$(xenstore-read /local/domain/$id/console/tty 2>&1 | grep -c '^/dev/pts/')"
    echo "KEEL-CHECK: create-duplicate $(xm create /tmp/tiny.cfg 2>&1 | head -n 1)"
    vm=$(xenstore-read /local/domain/$id/vm 2>/dev/null)
    echo "KEEL-CHECK: create-xm-destroy $(xm destroy "$id" 2>&1; echo "rc=$?")"
    n=0
    while [ $n -lt 100 ] && [ "$(free_pages)" != "$before" ]; do
        n=$((n + 1))
        sleep 0.1
    done
    after=$(free_pages)
    echo "KEEL-CHECK: create-destroyed listed=$(xm list 2>&1 | grep -c '^tiny ')" \
        "nodes=$(xenstore-list /local/domain 2>/dev/null | grep -c "^$id\$")" \
        "free-returned=$([ "$after" = "$before" ] && echo yes || echo "no($before/$after)")"
    echo "KEEL-CHECK: create-vm-node $(case "$vm" in /vm/*) xenstore-exists "$vm" 2>/dev/null && echo kept || echo removed ;; *) echo "missing($vm)" ;; esac)"
else
    echo "KEEL-CHECK: create-output $out"
fi
# create/destroy x50: every page, domain, xenstore node and console pty comes back.
ptys() { ls /dev/pts 2>/dev/null | grep -c '^[0-9]'; }
nodes() { xenstore-ls / 2>/dev/null | wc -l; }
# Event channels dom0's daemons bound with /dev/xen/evtchn ("evtchn:<program>" in /proc/interrupts).
ports() { grep -c 'evtchn:' /proc/interrupts; }
free0=$(free_pages) ptys0=$(ptys) nodes0=$(nodes) ports0=$(ports)
ok=0 i=0
while [ $i -lt 50 ]; do
    i=$((i + 1))
    if xm create /tmp/tiny.cfg >/dev/null 2>&1 && xm destroy tiny >/dev/null 2>&1; then
        ok=$((ok + 1))
    fi
done
n=0
while [ $n -lt 100 ] && { [ "$(free_pages)" != "$free0" ] || [ "$(ptys)" != "$ptys0" ] || [ "$(ports)" != "$ports0" ]; }; do
    n=$((n + 1))
    sleep 0.1
done
echo "KEEL-CHECK: create-cycles ok=$ok/50 free-same=$([ "$(free_pages)" = "$free0" ] && echo yes || echo "no($free0/$(free_pages))")" \
    "domains=$(xenstore-list /local/domain 2>/dev/null | grep -vc '^0$') ptys=$(($(ptys) - ptys0))" \
    "nodes=$(($(nodes) - nodes0)) ports=$(($(ports) - ports0)) listed=$(xm list 2>/dev/null | grep -c '^tiny ')"
# A corrupt kernel and too much memory: one line each, nothing left behind.
echo "not an elf" >/tmp/keel-bad.elf
echo "KEEL-CHECK: create-corrupt $(xm create /tmp/tiny.cfg kernel=/tmp/keel-bad.elf 2>&1 | head -n 1)"
echo "KEEL-CHECK: create-toomuch $(xm create /tmp/tiny.cfg memory=1000000 maxmem=1000000 2>&1 | head -n 1)"
# A syntax error (file and line named), a missing kernel file, more vCPUs than a domain may have.
printf 'name = "broken"\nmemory = 16\nkernel = "/tmp/keel-tiny.elf"\nvcpus = = 2\n' >/tmp/broken.cfg
echo "KEEL-CHECK: create-syntax $(xm create /tmp/broken.cfg 2>&1 | head -n 1)"
echo "KEEL-CHECK: create-nokernel $(xm create /tmp/tiny.cfg kernel=/tmp/no-such-kernel 2>&1 | head -n 1)"
echo "KEEL-CHECK: create-vcpus $(xm create /tmp/tiny.cfg vcpus=1000 2>&1 | head -n 1)"
echo "KEEL-CHECK: create-leftover domains=$(xenstore-list /local/domain 2>/dev/null | grep -vc '^0$')" \
    "free-same=$([ "$(free_pages)" = "$before" ] && echo yes || echo no)"
# Debian's stock kernel as a 2-vCPU PVH domU with a busybox initrd made here, when dom0 carries the kernel in
# /usr/lib/keel/vmlinuz: the xl test's initramfs does (tests/tests/xl/create.rs asserts it); `KEEL_DOMU=1 cargo xtask ...`
# puts it in the normal one too (off by default: it makes every boot bigger). Its
# init's line must reach its console log (xenconsoled --log=guest); then it is destroyed and its memory comes back.
if domu_available; then
    # As a sysadmin does: the config in /etc/xen, created by its bare name.
    cp "$(domu_cfg debian)" /etc/xen/debian
    before=$(free_pages)
    out=$(xm create debian 2>&1)
    id=$(echo "$out" | sed -n 's/^Started domain debian (id=\([0-9]*\))$/\1/p')
    log=$(domu_log debian)
    n=0
    while [ -n "$id" ] && [ $n -lt 480 ] && ! grep -q "KEEL-DOMU: init reached" $log 2>/dev/null; do
        n=$((n + 1))
        sleep 0.5
    done
    echo "KEEL-CHECK: create-debian-output $out"
    echo "KEEL-CHECK: create-debian $(grep -a -o 'KEEL-DOMU: init reached, [0-9]* cpus' $log 2>/dev/null | head -n 1 | tr -d '\r') after=${n}x0.5s"
    echo "KEEL-CHECK: create-debian-list $(xm list 2>&1 | awk '$1 == "debian" { print $1, $3, $4 }')"
    [ -f $log ] && tail -n 5 $log | sed 's/^/KEEL-DOMU-LOG: /'
    if [ -n "$id" ]; then
        xm destroy "$id" >/dev/null 2>&1 || echo "KEEL-CHECK: create-debian-destroy failed"
    fi
    n=0
    while [ $n -lt 100 ] && [ "$(free_pages)" != "$before" ]; do
        n=$((n + 1))
        sleep 0.1
    done
    echo "KEEL-CHECK: create-debian-destroyed free-returned=$([ "$(free_pages)" = "$before" ] && echo yes || echo no)"
fi
