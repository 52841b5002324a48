# Memory ballooning of a Debian PVH domU (issue 12: `xm mem-set`): the guest's stock balloon driver (Linux's
# drivers/xen/balloon.c and xen-balloon.c) follows memory/target, giving pages back with
# XENMEM_decrease_reservation and taking them again with XENMEM_populate_physmap. Seen from inside (its MemTotal,
# the mem= field of its KEEL-DOMU-TICK lines), from `xm list` (the hypervisor's tot_pages) and from the
# hypervisor's free pages. tests/tests/xl/balloon.rs judges the KEEL-CHECK: balloon-* lines.
#
# memory = maxmem = 256: Linux sets its balloon target to memory/target less (static-max - the RAM it found), so a
# PVH guest whose maxmem is above its memory (which Xen's PVH has no populate-on-demand for) balloons down by the
# difference at boot; equal, the first target leaves it where it is.
if domu_available; then
    # The last tick's MemTotal in kB (empty before the first tick).
    balloon_mem() { domu_last_tick balloon | sed -n 's/.* mem=\([0-9]*\).*/\1/p'; }
    # The domain's memory in `xm list` (MiB).
    balloon_list() { xm list 2>/dev/null | awk '$1 == "balloon" { print $3 }'; }
    # `xm info` free_memory (MiB).
    balloon_info_free() { xm info 2>/dev/null | awk -F: '$1 ~ /^free_memory/ { gsub(/ /, "", $2); print $2 }'; }
    # balloon_until TEST SECONDS: polls the shell test TEST every half second; prints the half-seconds waited.
    balloon_until() {
        n=0
        while [ $n -lt $(($2 * 2)) ] && ! eval "$1" 2>/dev/null; do
            n=$((n + 1))
            sleep 0.5
        done
        echo $n
    }
    # balloon_settle: waits until the hypervisor's free pages stop moving (two equal readings a second apart).
    balloon_settle() {
        prev=$(domu_free)
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            sleep 1
            cur=$(domu_free)
            [ "$cur" = "$prev" ] && break
            prev=$cur
        done
    }

    domu_cfg balloon 'maxmem = 256' >/dev/null
    before=$(domu_free)
    out=$(xm create /tmp/balloon.cfg 2>&1)
    echo "KEEL-CHECK: balloon-create $out"
    id=$(echo "$out" | sed -n 's/^Started domain balloon (id=\([0-9]*\))$/\1/p')
    if [ -n "$id" ] && domu_wait balloon 'KEEL-DOMU: init reached' 240 &&
        domu_wait balloon 'KEEL-DOMU-TICK: ' 30 2; then
        balloon_settle
        mem0=$(balloon_mem)
        list0=$(balloon_list)
        free0=$(domu_free)
        info0=$(balloon_info_free)
        echo "KEEL-CHECK: balloon-start mem=$mem0 list=$list0 free=$free0 info-free=$info0" \
            "target=$(xenstore-read /local/domain/$id/memory/target 2>&1)" \
            "static-max=$(xenstore-read /local/domain/$id/memory/static-max 2>&1)"

        # Down to 128 MiB: about 131072 kB fewer in the guest, 32768 more free pages in the hypervisor.
        echo "KEEL-CHECK: balloon-mem-set-128 $(xm mem-set balloon 128 2>&1; echo "rc=$?")"
        waited=$(balloon_until '[ "$(balloon_mem)" -le $((mem0 - 126976)) ] && [ "$(balloon_list)" -le 130 ]' 120)
        balloon_settle
        mem1=$(balloon_mem)
        list1=$(balloon_list)
        free1=$(domu_free)
        echo "KEEL-CHECK: balloon-down drop-kb=$((mem0 - mem1)) list=$list1 free-rise=$((free1 - free0))" \
            "info-free-rise=$(($(balloon_info_free) - info0)) target=$(xenstore-read /local/domain/$id/memory/target 2>&1)" \
            "after=${waited}x0.5s"

        # Back to 256 MiB.
        echo "KEEL-CHECK: balloon-mem-set-256 $(xm mem-set balloon 256 2>&1; echo "rc=$?")"
        waited=$(balloon_until '[ "$(balloon_mem)" -ge $((mem0 - 4096)) ] && [ "$(balloon_list)" -ge 255 ]' 120)
        balloon_settle
        mem2=$(balloon_mem)
        list2=$(balloon_list)
        free2=$(domu_free)
        echo "KEEL-CHECK: balloon-up rise-kb=$((mem2 - mem1)) vs-start-kb=$((mem2 - mem0)) list=$list2" \
            "free-drop=$((free1 - free2)) vs-start-pages=$((free0 - free2)) after=${waited}x0.5s"
        # Above static-max is refused, and changes nothing.
        echo "KEEL-CHECK: balloon-above-max $(xm mem-set balloon 512 2>&1 | head -n 1)"
        echo "KEEL-CHECK: balloon-alive $(domu_last_tick balloon | sed 's/ cpus=.*//')"
        [ -f "$(domu_log balloon)" ] && grep -a -i -E 'balloon|BUG|Oops|panic' "$(domu_log balloon)" | tail -n 5 |
            tr -d '\r' | sed 's/^/KEEL-DOMU-LOG: /'
    else
        echo "KEEL-CHECK: balloon-start not booted ($(domu_count balloon 'KEEL-DOMU: init reached') init lines)"
        [ -f "$(domu_log balloon)" ] && tail -n 5 "$(domu_log balloon)" | tr -d '\r' | sed 's/^/KEEL-DOMU-LOG: /'
    fi
    [ -n "$id" ] && xm destroy "$id" >/dev/null 2>&1
    n=0
    while [ $n -lt 100 ] && [ "$(domu_free)" != "$before" ]; do
        n=$((n + 1))
        sleep 0.1
    done
    after=$(domu_free)
    echo "KEEL-CHECK: balloon-destroyed free-returned=$([ "$after" = "$before" ] && echo yes || echo "no($before/$after)")"
fi
