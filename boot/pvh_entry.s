# PVH entry: 32-bit protected mode -> 64-bit long mode -> rust_entry(start_info_paddr).
#
# Machine state at entry (xen docs/misc/pvh.pandoc; QEMU's PVH loader provides the same):
# 32-bit flat protected mode, paging off, CR4 = 0, interrupts off, %ebx = guest-physical
# address of struct hvm_start_info. "The OS is in charge of setting up its own stack, GDT
# and IDT": nothing else can be relied on, so this code touches no memory outside the image.
#
# The page tables identity-map the first IDENTITY_MAP_GIB (8) GiB (4 KiB pages for the first
# 4 MiB, 2 MiB pages above; only the boot stack's guard page is left unmapped), so that
# guest-physical == linear for: the image at 1 MiB, all RAM of a small stub domain, the
# start-info segment above the image, the special pages at 0xfeff8000-0xfeffffff (console
# and xenstore rings) and the grant-mapping window placed just above 4 GiB
# (src/xen/grant_table.rs). The Rust code reads IDENTITY_MAPPED_LIMIT_BYTES (src/arch/x86_64)
# which must agree with the 8 here.
#
# Not run through a C preprocessor: plain GNU as (AT&T) syntax.

    .section .text.pvh_entry, "ax", @progbits
    .code32
    .globl pvh_start32
pvh_start32:
    cli
    cld
    # Keep the start-info address in %esi; nothing below uses %esi.
    movl %ebx, %esi

    # Zero .bss (the page tables and the stack live there). Xen's and QEMU's loaders already
    # zero memsz beyond filesz, but the cost is tiny and it removes the dependency.
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb

    movl $boot_stack_top, %esp

    # PML4[0] -> PDPT (present | writable).
    movl $boot_pdpt, %eax
    orl $0x3, %eax
    movl %eax, boot_pml4

    # PDPT[i] -> PD i for i in 0..8.
    movl $boot_page_directories, %eax
    orl $0x3, %eax
    xorl %ecx, %ecx
1:  movl %eax, boot_pdpt(,%ecx,8)
    addl $0x1000, %eax
    incl %ecx
    cmpl $8, %ecx
    jb 1b

    # The first 4 MiB (the image) use 4 KiB pages, so that the guard page below the boot
    # stack can stay unmapped: a stack overflow faults instead of silently overwriting what
    # lies below the stack. (Page 0 stays mapped: loaders may put boot data there, e.g.
    # QEMU's PVH memory map; only the address 0 itself means "not present".)
    # Low page-table entry i: physical (i << 12) | present | writable, i in 0..1024.
    xorl %ecx, %ecx
2:  movl %ecx, %eax
    shll $12, %eax
    orl $0x3, %eax
    movl %eax, boot_low_page_tables(,%ecx,8)
    incl %ecx
    cmpl $1024, %ecx
    jb 2b
    movl $boot_stack_guard, %eax
    shrl $12, %eax
    movl $0, boot_low_page_tables(,%eax,8)      # stack guard page (linker.ld: below 4 MiB)

    # PD entries 0 and 1 -> the two low page tables.
    movl $boot_low_page_tables, %eax
    orl $0x3, %eax
    movl %eax, boot_page_directories
    addl $0x1000, %eax
    movl %eax, boot_page_directories+8

    # PD entries 2..4096: physical (i << 21) | present | writable | 2 MiB page (0x83).
    # The high half of entry i is i >> 11 (bits 32.. of the address).
    movl $2, %ecx
3:  movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax
    movl %eax, boot_page_directories(,%ecx,8)
    movl %ecx, %edx
    shrl $11, %edx
    movl %edx, boot_page_directories+4(,%ecx,8)
    incl %ecx
    cmpl $4096, %ecx
    jb 3b

    # Long mode: CR3 = PML4, CR4.PAE, EFER.LME, then CR0.PG (with WP, keeping PE).
    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl %cr4, %eax
    orl $0x20, %eax                 # CR4.PAE
    movl %eax, %cr4
    movl $0xC0000080, %ecx          # IA32_EFER
    rdmsr
    orl $0x100, %eax                # EFER.LME
    wrmsr
    movl %cr0, %eax
    orl $0x80010001, %eax           # CR0.PG | CR0.WP | CR0.PE
    movl %eax, %cr0

    lgdt boot_gdt_pointer
    ljmp $0x08, $pvh_long_mode_entry

    .code64
pvh_long_mode_entry:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movq $boot_stack_top, %rsp
    xorl %ebp, %ebp
    movl %esi, %edi                 # rust_entry(start_info_paddr: u64), zero-extended
    call rust_entry
    # rust_entry never returns; if it did, stop this vCPU.
4:  cli
    hlt
    jmp 4b

    .section .data.boot_gdt, "aw", @progbits
    .balign 16
boot_gdt:
    .quad 0                         # null descriptor
    .quad 0x00af9a000000ffff        # 0x08: 64-bit code, DPL 0
    .quad 0x00cf92000000ffff        # 0x10: data, DPL 0
boot_gdt_end:
    .balign 8
boot_gdt_pointer:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt

    .section .bss.boot_page_tables, "aw", @nobits
    .balign 4096
    .globl boot_pml4
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_page_directories:
    .skip 4096 * 8
boot_low_page_tables:
    .skip 4096 * 2

    .section .bss.boot_stack, "aw", @nobits
    .balign 4096
    .globl boot_stack_guard
boot_stack_guard:                   # left unmapped by the page tables above
    .skip 4096
    .globl boot_stack_bottom
boot_stack_bottom:
    .skip 128 * 1024
    .globl boot_stack_top
boot_stack_top:
