/*
 * Application-processor start-up trampoline.
 *
 * Copied at run time to AP_TRAMPOLINE_PADDR (0x8000, page 8 in the SIPI vector) and entered there in real mode
 * after INIT-SIPI-SIPI. It climbs to long mode with the CR3 the BSP left in its data block, takes its stack and
 * entry point from the same block, sets `ap_tramp_started` and jumps to the Rust entry with the argument in RDI.
 * Every address is computed relative to the copy's base because this code never runs where it was linked.
 */

.set AP_BASE, 0x8000
.set CR0_PE,   0x00000001
.set CR0_WP,   0x00010000
.set CR0_NW,   0x20000000
.set CR0_CD,   0x40000000
.set CR0_PG,   0x80000000
.set CR4_PAE,  0x00000020
.set MSR_EFER, 0xc0000080
.set EFER_LME, 0x00000100


.section .rodata.ap_trampoline, "a"
.balign 4096
.global ap_tramp_start
ap_tramp_start:
.code16
    cli
    cld
    xorw %ax, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    lgdtl (ap_tramp_gdtr - ap_tramp_start + AP_BASE)
    movl %cr0, %eax
    /* An AP comes out of INIT with caching disabled (CD and NW set): turn caching on, as the BIOS did on the BSP. */
    andl $~(CR0_CD | CR0_NW), %eax
    orl $CR0_PE, %eax
    movl %eax, %cr0
    ljmpl $0x08, $(ap_tramp_32 - ap_tramp_start + AP_BASE)

.code32
ap_tramp_32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl %cr4, %eax
    orl $CR4_PAE, %eax
    movl %eax, %cr4
    movl (ap_tramp_cr3 - ap_tramp_start + AP_BASE), %eax
    movl %eax, %cr3
    movl $MSR_EFER, %ecx
    rdmsr
    orl $EFER_LME, %eax
    wrmsr
    movl %cr0, %eax
    orl $(CR0_PG | CR0_WP), %eax
    movl %eax, %cr0
    ljmpl $0x18, $(ap_tramp_64 - ap_tramp_start + AP_BASE)

.code64
ap_tramp_64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movq (ap_tramp_stack - ap_tramp_start + AP_BASE), %rsp
    movq (ap_tramp_arg - ap_tramp_start + AP_BASE), %rdi
    movq (ap_tramp_entry - ap_tramp_start + AP_BASE), %rax
    movl $1, (ap_tramp_started - ap_tramp_start + AP_BASE)
    xorl %ebp, %ebp
    call *%rax
1:  cli
    hlt
    jmp 1b

.balign 16
ap_tramp_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff        /* 0x08: 32-bit code */
    .quad 0x00cf92000000ffff        /* 0x10: data */
    .quad 0x00af9a000000ffff        /* 0x18: 64-bit code */
ap_tramp_gdt_end:
.balign 8
ap_tramp_gdtr:
    .short ap_tramp_gdt_end - ap_tramp_gdt - 1
    .long ap_tramp_gdt - ap_tramp_start + AP_BASE
.balign 8
/* Data block filled by the BSP before each SIPI (offsets exported below). */
.global ap_tramp_cr3
ap_tramp_cr3:     .quad 0
.global ap_tramp_stack
ap_tramp_stack:   .quad 0
.global ap_tramp_entry
ap_tramp_entry:   .quad 0
.global ap_tramp_arg
ap_tramp_arg:     .quad 0
.global ap_tramp_started
ap_tramp_started: .quad 0
.global ap_tramp_end
ap_tramp_end:
