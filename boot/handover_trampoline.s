# The live update's last step: leave long mode, copy the new image over the old one, and
# enter the new image at its PVH entry, as Xen would have (docs/live-update.md, "The jump").
#
# These bytes are not run where the linker put them: `src/arch/x86_64/handover.rs` copies
# handover_trampoline_start..handover_trampoline_end to the start of a page P of the heap
# that the copy does not overwrite, writes a GDT pointer, a GDT and the parameters at fixed
# offsets into P (the HANDOVER_* offsets below, mirrored there), and calls P with %rdi = P.
# So the code is position-independent: every address is P plus an offset.
#
# The copy is one forward `rep movsb` of `length` bytes from `source` (the staged image: the
# new image's segments, its zero-filled .bss, then the start info, the command line, the
# memory map and the state, all laid out as they must lie from `destination` up) to
# `destination` (the new image's lowest address, 1 MiB). The destination lies below the
# source (the staging buffer is in the old image's heap, above the old image), so a forward
# copy never reads a byte it already overwrote, even where the two ranges overlap.
# Paging is off during the copy: the old page tables live in the old image's .bss, which the
# copy overwrites. So the page P, its GDT and everything the copy touches lie below 4 GiB
# (the heap of a stub domain lies below the local APIC at 0xFEE00000).
#
# State at the new image's entry (xen docs/misc/pvh.pandoc): 32-bit flat protected mode,
# paging off, CR4 = 0, interrupts off, %ebx = the start info's guest-physical address.
#
# Not run through a C preprocessor: plain GNU as (AT&T) syntax.

    .set HANDOVER_GDT_POINTER, 0x800      # .word limit, .quad base (P + HANDOVER_GDT)
    .set HANDOVER_SOURCE, 0x810           # u32
    .set HANDOVER_DESTINATION, 0x814      # u32
    .set HANDOVER_LENGTH, 0x818           # u32
    .set HANDOVER_ENTRY, 0x81c            # u32: the new image's PVH (32-bit) entry
    .set HANDOVER_START_INFO, 0x820       # u32: %ebx at the entry
    # The GDT at P + 0x840: null, 0x08 64-bit code, 0x10 32-bit code, 0x18 flat data.

    .section .text.handover_trampoline, "ax", @progbits
    .code64
    .globl handover_trampoline_start
    .globl handover_trampoline_end
handover_trampoline_start:
    cli
    cld
    # The GDT in P: the old one lies in the old image.
    lgdt HANDOVER_GDT_POINTER(%rdi)
    # A far return into the 32-bit code segment: compatibility mode, still paged.
    leaq (handover_trampoline_32 - handover_trampoline_start)(%rdi), %rax
    pushq $0x10
    pushq %rax
    lretq

    .code32
handover_trampoline_32:
    movl $0x18, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    movl %eax, %fs
    movl %eax, %gs
    # Paging off (the Intel SDM's way out of long mode: from compatibility mode, on an
    # identity-mapped page), then EFER.LME off, CR4 = 0 as the PVH entry expects.
    movl %cr0, %eax
    andl $0x7fffffff, %eax
    movl %eax, %cr0
    movl $0xC0000080, %ecx
    rdmsr
    andl $0xfffffeff, %eax
    wrmsr
    xorl %eax, %eax
    movl %eax, %cr4
    # %edi = P (below 4 GiB, so the upper half of %rdi was zero).
    movl HANDOVER_SOURCE(%edi), %esi
    movl HANDOVER_LENGTH(%edi), %ecx
    movl HANDOVER_ENTRY(%edi), %edx
    movl HANDOVER_START_INFO(%edi), %ebx
    movl HANDOVER_DESTINATION(%edi), %edi
    rep movsb
    jmp *%edx
handover_trampoline_end:
