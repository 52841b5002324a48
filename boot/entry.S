/*
 * Keel's first instructions.
 *
 * The same ELF is entered two ways, both in 32-bit protected mode with paging off:
 *   - by a multiboot2 loader (GRUB): EAX = 0x36d76289, EBX = physical address of the boot information;
 *   - through its Xen PVH ELF note (QEMU -kernel, Xen-style loaders): EBX = physical address of hvm_start_info.
 * Both paths record which protocol they came through, identity-map the first 4 GiB with 2 MiB pages, switch to
 * long mode and call `keel_start_bsp(protocol, info_paddr)` on the boot stack.
 *
 * Assembled by rustc's integrated assembler (AT&T syntax) through `global_asm!` in hypervisor/src/main.rs, which
 * substitutes the named operands (ABI numbers from keel-abi).
 */

.set MB2_MAGIC,          0xe85250d6
.set MB2_ARCH_I386,      0
.set MB2_LOADER_MAGIC,   0x36d76289
.set XEN_ELFNOTE_PHYS32_ENTRY, {xen_elfnote_phys32_entry}   /* keel_abi::elfnote::PHYS32_ENTRY */

.set BOOT_PROTO_MULTIBOOT2, 1
.set BOOT_PROTO_PVH,        2

.set CR0_PE,   0x00000001
.set CR0_WP,   0x00010000
.set CR0_PG,   0x80000000
.set CR4_PAE,  0x00000020
.set MSR_EFER, 0xc0000080
.set EFER_LME, 0x00000100

.set PTE_P,    0x001
.set PTE_W,    0x002
.set PTE_PS,   0x080

/* ---- multiboot2 header: must sit in the first 32 KiB of the file, 8-byte aligned ---- */
.section .multiboot2_header, "a"
.balign 8
mb2_header_start:
    .long MB2_MAGIC
    .long MB2_ARCH_I386
    .long mb2_header_end - mb2_header_start
    .long 0x100000000 - (MB2_MAGIC + MB2_ARCH_I386 + (mb2_header_end - mb2_header_start))
    /* end tag */
    .balign 8
    .short 0
    .short 0
    .long 8
mb2_header_end:

/* ---- Xen PVH ELF note: the 32-bit physical entry point ---- */
.section .note.Xen, "a", @note
.balign 4
    .long 4                         /* namesz: "Xen\0" */
    .long 4                         /* descsz */
    .long XEN_ELFNOTE_PHYS32_ENTRY
    .asciz "Xen"
    .balign 4
    .long keel_entry_pvh
    .balign 4

/* ---- 32-bit entry code ---- */
.section .text.boot, "ax"
.code32
.global keel_entry_multiboot2
keel_entry_multiboot2:
    cli
    cld
    cmpl $MB2_LOADER_MAGIC, %eax
    jne 1f
    movl $BOOT_PROTO_MULTIBOOT2, %esi
    jmp boot_common32
1:  /* Entered without the multiboot2 magic: no information we can trust. */
    movl $0, %esi
    jmp boot_common32

.global keel_entry_pvh
keel_entry_pvh:
    cli
    cld
    movl $BOOT_PROTO_PVH, %esi

boot_common32:
    /* Zero .bss (it holds the boot stack and the boot page tables); EBX and ESI survive. */
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb

    movl %esi, boot_protocol
    movl %ebx, boot_info_paddr
    movl $boot_stack_top, %esp

    /* PML4[0] -> PDPT; PDPT[0..4] -> four page directories of 2 MiB pages = first 4 GiB identity-mapped. */
    movl $boot_pdpt, %eax
    orl $(PTE_P | PTE_W), %eax
    movl %eax, boot_pml4

    xorl %ecx, %ecx
2:  movl %ecx, %eax
    shll $12, %eax
    addl $boot_pd, %eax
    orl $(PTE_P | PTE_W), %eax
    movl %eax, boot_pdpt(,%ecx,8)
    incl %ecx
    cmpl $4, %ecx
    jne 2b

    xorl %ecx, %ecx                 /* entry index 0..2047 across the four directories */
3:  movl %ecx, %eax
    shll $21, %eax                  /* low 32 bits of the 2 MiB frame address */
    orl $(PTE_P | PTE_W | PTE_PS), %eax
    movl %eax, boot_pd(,%ecx,8)
    movl %ecx, %eax
    shrl $11, %eax                  /* bits 32+ of the frame address */
    movl %eax, boot_pd+4(,%ecx,8)
    incl %ecx
    cmpl $2048, %ecx
    jne 3b

    movl %cr4, %eax
    orl $CR4_PAE, %eax
    movl %eax, %cr4
    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl $MSR_EFER, %ecx
    rdmsr
    orl $EFER_LME, %eax
    wrmsr
    movl %cr0, %eax
    orl $(CR0_PG | CR0_WP | CR0_PE), %eax
    movl %eax, %cr0

    lgdt boot_gdtr
    ljmp $0x08, $boot_long_mode

.code64
boot_long_mode:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movabsq $boot_stack_top, %rsp
    xorl %ebp, %ebp
    movl boot_protocol(%rip), %edi
    movl boot_info_paddr(%rip), %esi
    call keel_start_bsp
4:  cli
    hlt
    jmp 4b

.section .rodata.boot, "a"
.balign 16
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff        /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff        /* 0x10: data */
boot_gdt_end:
.balign 16
boot_gdtr:
    .short boot_gdt_end - boot_gdt - 1
    .long boot_gdt
    .long 0

.section .bss.boot, "aw", @nobits
.balign 4096
.global boot_pml4
boot_pml4:  .skip 4096
boot_pdpt:  .skip 4096
boot_pd:    .skip 4096 * 4
.balign 16
.global boot_stack_bottom
boot_stack_bottom:
    .skip 262144
.global boot_stack_top
boot_stack_top:
.balign 8
boot_protocol:      .long 0
boot_info_paddr:    .long 0
