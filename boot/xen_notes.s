# ELF notes that make the image bootable as a Xen PVH guest (and by QEMU's PVH loader).
#
# Xen's loader (xen/common/libelf/libelf-dominfo.c) reads notes from PT_NOTE segments; for a
# PVH guest only XEN_ELFNOTE_PHYS32_ENTRY (type 18, xen/include/public/elfnote.h) is
# required, and its address must lie inside the PT_LOAD physical range. Note name "Xen\0".
#
# Pitfalls (code-style-anchors §4): the descriptor is an 8-byte .quad because QEMU reads it
# as 8 bytes in an ELF64 image (Xen accepts 4 or 8), and the PT_NOTE segment must have
# alignment 4 (linker.ld gives .note.Xen its own ALIGN(4) output section).
# This file is not run through a C preprocessor: plain GNU as syntax, no macros.

    .section .note.Xen, "a", @note
    .balign 4
    .long 4                         # namesz: "Xen\0"
    .long 8                         # descsz: one .quad
    .long 18                        # XEN_ELFNOTE_PHYS32_ENTRY
    .asciz "Xen"
    .balign 4
    .quad pvh_start32               # 32-bit physical entry point (boot/pvh_entry.s)
    .balign 4

    .long 4                         # namesz
    .long .Lguest_os_end - .Lguest_os_start
    .long 6                         # XEN_ELFNOTE_GUEST_OS (informative; ignored for PVH)
    .asciz "Xen"
    .balign 4
.Lguest_os_start:
    .asciz "xenstore-stubdom"
.Lguest_os_end:
    .balign 4
