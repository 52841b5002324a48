# DMA through the IOMMU (issue 15), when dom0 owns the machine's devices and Keel says its IOMMU translates their
# DMA: QEMU's `edu` test device (1234:11e8), whose DMA engine dom0 drives by hand through its BAR (busybox
# devmem), copies between dom0's own RAM and the device (allowed), then is pointed at an address dom0 does not own
# (Keel's memory: the first range dom0's e820 calls unusable), once to read it and once to write it. (The test
# gives edu a 64-bit DMA mask: its default of 28 bits would cut addresses.) Keel must
# log an IOMMU fault for each, and dom0 and Keel carry on. tests/tests/xl.rs judges the KEEL-CHECK: dma-* lines.
edu=$(grep -l 0x11e8 /sys/bus/pci/devices/*/device 2>/dev/null | head -n 1)
if [ -n "$edu" ] && xm dmesg 2>/dev/null | grep -q "translates every device's DMA"; then
    dev=${edu%/device}
    bar=$(($(head -n 1 "$dev/resource" | cut -d' ' -f1)))
    # Memory space and bus mastering on (the command register, offset 4 of its configuration space).
    printf '\006' | dd of="$dev/config" bs=1 seek=4 count=1 conv=notrunc 2>/dev/null
    # edu's registers: 0x00 its id, 0x04 a liveness check (reads back inverted), 0x80 DMA source, 0x88 DMA
    # destination, 0x90 count, 0x98 command (bit 0 start, bit 1 device-to-RAM); its buffer is at 0x40000.
    echo "KEEL-CHECK: dma-edu ${dev##*/} bar=$(printf '%#x' $bar) id=$(devmem $((bar)) 32)"
    devmem $((bar + 4)) 32 0x12345678
    echo "KEEL-CHECK: dma-edu-live $(devmem $((bar + 4)) 32)"
    # dma FROM TO COMMAND: one 8-byte transfer, waited for (up to 2 s).
    dma() {
        devmem $((bar + 0x80)) 32 "$1"
        devmem $((bar + 0x88)) 32 "$2"
        devmem $((bar + 0x90)) 32 8
        devmem $((bar + 0x98)) 32 "$3"
        n=0
        while [ $n -lt 20 ] && [ $(($(devmem $((bar + 0x98)) 32) & 1)) = 1 ]; do
            n=$((n + 1))
            sleep 0.1
        done
    }
    faults() { xm dmesg 2>/dev/null | grep -c "IOMMU: DMA fault"; }
    # The first range dom0's e820 calls unusable: memory Keel keeps (its own, or other domains').
    bad=
    for m in /sys/firmware/memmap/*; do
        [ "$(cat "$m/type")" = "Unusable memory" ] || continue
        start=$(($(cat "$m/start")))
        if [ $start -ge 1048576 ] && [ $start -lt 268435456 ]; then
            bad=$start
            break
        fi
    done
    # A page dom0 owns whose contents stay put: the first range its e820 calls ACPI tables (Keel's tables for
    # dom0, in its RAM). Its first 8 bytes go into the device and back: allowed, and nothing changes.
    own=
    for m in /sys/firmware/memmap/*; do
        [ "$(cat "$m/type")" = "ACPI Tables" ] && own=$(($(cat "$m/start"))) && break
    done
    f0=$(faults)
    if [ -n "$own" ]; then
        dma $own 0x40000 1
        dma 0x40000 $own 3
        f1=$(faults)
        echo "KEEL-CHECK: dma-own $(printf '%#x' $own) faults=$((f1 - f0))"
    fi
    f1=$(faults)
    if [ -n "$bad" ]; then
        echo "KEEL-CHECK: dma-target $(printf '%#x' $bad)"
        dma $bad 0x40000 1
        sleep 1
        f2=$(faults)
        echo "KEEL-CHECK: dma-read-bad faults=$((f2 - f1)) $(xm dmesg | grep 'IOMMU: DMA fault' | tail -n 1 | sed 's/.*IOMMU: //')"
        dma 0x40000 $bad 3
        sleep 1
        f3=$(faults)
        echo "KEEL-CHECK: dma-write-bad faults=$((f3 - f2)) $(xm dmesg | grep 'IOMMU: DMA fault' | tail -n 1 | sed 's/.*IOMMU: //')"
    fi
    echo "KEEL-CHECK: dma-after xm=$(xm list 2>&1 | grep -c '^Domain-0 ') live=$(devmem $((bar + 4)) 32)"
fi
