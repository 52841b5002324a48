/*
 * A Keel test guest's first instructions (AT&T syntax, assembled by rustc through `global_asm!` in
 * src/rt.rs, which substitutes the named operands, e.g. MAX_VCPUS).
 *
 * Keel (and QEMU's -kernel loader) enter through the Xen PVH note in 32-bit protected mode, paging off,
 * IF=0, EBX = guest-physical address of hvm_start_info. Under Keel every vCPU of a test guest enters here
 * at once; each finds its vCPU id in CPUID leaf 0x40000004 EBX (when the VCPU_ID_PRESENT flag is set, else
 * it takes a ticket in arrival order). vCPU 0 zeroes .bss, builds page tables that identity-map the first
 * 4 GiB with 2 MiB pages and releases the others; every vCPU then enters long mode on its own stack and
 * calls the Rust entry with (vcpu id, start_info address). The 256 exception/interrupt stubs live here too.
 */

/* ABI numbers, from keel-abi (elfnote, cpuid). */
.set XEN_ELFNOTE_PHYS32_ENTRY, {xen_elfnote_phys32_entry}
.set XEN_CPUID_BASE,  {xen_cpuid_base}
.set XEN_CPUID_HVM,   {xen_cpuid_hvm}
.set XEN_SIG_EBX,     {xen_sig_ebx}        /* "XenV" */
.set XEN_SIG_ECX,     {xen_sig_ecx}        /* "MMXe" */
.set XEN_SIG_EDX,     {xen_sig_edx}        /* "nVMM" */
.set VCPU_ID_PRESENT, {vcpu_id_present}

.set MAX_VCPUS,  {max_vcpus}
.set STACK_SIZE, {stack_size}

.set CR0_PE,   0x00000001
.set CR0_WP,   0x00010000
.set CR0_PG,   0x80000000
.set CR4_PAE,  0x00000020
.set MSR_EFER, 0xc0000080
.set EFER_LME, 0x00000100

.set PTE_P,    0x001
.set PTE_W,    0x002
.set PTE_PS,   0x080

/* Vectors whose exceptions push an error code: 8, 10-14, 17, 21, 29, 30. */
.set ERROR_CODE_VECTORS, 0x60227d00

/* ---- Xen PVH ELF note: the 32-bit physical entry point ---- */
.section .note.Xen, "a", @note
.balign 4
    .long 4                         /* namesz: "Xen\0" */
    .long 4                         /* descsz */
    .long XEN_ELFNOTE_PHYS32_ENTRY
    .asciz "Xen"
    .balign 4
    .long xtf_entry
    .balign 4

/* ---- 32-bit entry ---- */
.section .text.entry, "ax"
.code32
.global xtf_entry
xtf_entry:
    cli
    cld
    movl %ebx, %ebp                 /* hvm_start_info; CPUID clobbers EBX */

    /* vCPU id into EDI. */
    movl $XEN_CPUID_BASE, %eax
    cpuid
    cmpl $XEN_SIG_EBX, %ebx
    jne 1f
    cmpl $XEN_SIG_ECX, %ecx
    jne 1f
    cmpl $XEN_SIG_EDX, %edx
    jne 1f
    cmpl $XEN_CPUID_HVM, %eax
    jb 1f
    movl $XEN_CPUID_HVM, %eax
    xorl %ecx, %ecx
    cpuid
    testl $VCPU_ID_PRESENT, %eax
    jz 1f
    movl %ebx, %edi
    jmp 2f
1:  movl $1, %edi                   /* no id from the hypervisor: arrival order */
    lock xaddl %edi, xtf_boot_ticket
2:  cmpl $MAX_VCPUS, %edi
    jae xtf_park32
    testl %edi, %edi
    jnz 5f

    /* vCPU 0: zero .bss (stacks, page tables, Rust statics), then build the page tables. */
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb
    movl %ebp, xtf_start_info_paddr

    /* PML4[0] -> PDPT; PDPT[0..4] -> four page directories of 2 MiB pages. */
    movl $xtf_pdpt, %eax
    orl $(PTE_P | PTE_W), %eax
    movl %eax, xtf_pml4

    xorl %ecx, %ecx
3:  movl %ecx, %eax
    shll $12, %eax
    addl $xtf_pd, %eax
    orl $(PTE_P | PTE_W), %eax
    movl %eax, xtf_pdpt(,%ecx,8)
    incl %ecx
    cmpl $4, %ecx
    jne 3b

    xorl %ecx, %ecx                 /* entry 0..2047 across the four directories */
4:  movl %ecx, %eax
    shll $21, %eax
    orl $(PTE_P | PTE_W | PTE_PS), %eax
    movl %eax, xtf_pd(,%ecx,8)
    movl %ecx, %eax
    shrl $11, %eax                  /* bits 32+ of the frame address */
    movl %eax, xtf_pd+4(,%ecx,8)
    incl %ecx
    cmpl $2048, %ecx
    jne 4b

    movl $1, xtf_boot_ready
    xorl %edi, %edi
    jmp 6f

    /* Other vCPUs: wait until vCPU 0 has built the page tables. */
5:  pause
    cmpl $0, xtf_boot_ready
    je 5b

6:  movl %cr4, %eax
    orl $CR4_PAE, %eax
    movl %eax, %cr4
    movl $xtf_pml4, %eax
    movl %eax, %cr3
    movl $MSR_EFER, %ecx
    rdmsr
    orl $EFER_LME, %eax
    wrmsr
    movl %cr0, %eax
    orl $(CR0_PG | CR0_WP | CR0_PE), %eax
    movl %eax, %cr0

    lgdt xtf_gdtr
    ljmp $0x08, $xtf_long_mode

/* A vCPU beyond MAX_VCPUS stops here (under Xen, HLT with IF=0 takes the vCPU down). */
xtf_park32:
    cli
    hlt
    jmp xtf_park32

.code64
xtf_long_mode:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    /* RSP = top of this vCPU's stack: stacks + (id + 1) * STACK_SIZE. */
    movl %edi, %eax
    incl %eax
    imull $STACK_SIZE, %eax, %eax
    movabsq ${stacks}, %rsp
    addq %rax, %rsp
    xorl %ebp, %ebp
    movl xtf_start_info_paddr(%rip), %esi
    call {rust_start}
7:  cli
    hlt
    jmp 7b

/* ---- Exception and interrupt entry: 256 stubs of 16 bytes, then one common path ---- */
.section .text.xtf_traps, "ax"
.balign 16
.global xtf_trap_stubs
xtf_trap_stubs:
.set vector, 0
.rept 256
    .balign 16
    .set has_error_code, 0
    .if vector < 32
    .set has_error_code, (ERROR_CODE_VECTORS >> vector) & 1
    .endif
    .if has_error_code == 0
    pushq $0                        /* same frame layout for every vector */
    .endif
    pushq $vector
    jmp xtf_trap_common
    .set vector, vector + 1
.endr

xtf_trap_common:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, %rdi                 /* &mut TrapFrame; RSP is 16-byte aligned here */
    cld
    call {trap_dispatch}
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    addq $16, %rsp                  /* vector and error code */
    iretq

.section .rodata.xtf_gdt, "a"
.balign 16
xtf_gdt:
    .quad 0
    .quad 0x00af9a000000ffff        /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff        /* 0x10: data */
xtf_gdt_end:
.balign 16
xtf_gdtr:
    .short xtf_gdt_end - xtf_gdt - 1
    .long xtf_gdt
    .long 0

.section .data.xtf_boot, "aw"
.balign 4
xtf_boot_ticket:      .long 0       /* next arrival-order id (outside .bss: read before it is zeroed) */
xtf_boot_ready:       .long 0       /* set by vCPU 0 once the page tables exist */

.section .bss.xtf_boot, "aw", @nobits
.balign 4096
xtf_pml4:   .skip 4096
xtf_pdpt:   .skip 4096
xtf_pd:     .skip 4096 * 4
.balign 8
xtf_start_info_paddr: .long 0
