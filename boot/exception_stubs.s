# CPU exception entry stubs: vectors 0-31 all end in rust_exception(&ExceptionFrame).
#
# The kernel runs with interrupts disabled and takes no device interrupts (events are
# polled), so only CPU exceptions can arrive. Without an IDT any exception would triple
# fault and the domain would vanish without a word; with these stubs the kernel prints
# the vector, error code, RIP and CR2 through the panic handler and shuts down with
# SHUTDOWN_crash (or exits QEMU with status 69).
#
# In 64-bit mode the CPU pushes SS, RSP, RFLAGS, CS, RIP and, for some vectors, an error
# code. Each stub pushes a 0 error code where the CPU does not, then its vector number, so
# the frame has one layout: vector, error code, RIP, CS, RFLAGS, RSP, SS
# (src/arch/x86_64/exceptions.rs, struct ExceptionFrame).
# Not run through a C preprocessor: plain GNU as (AT&T) syntax.

    .section .text.exception_stubs, "ax", @progbits
    .code64
    .balign 16
exception_stub_0:
    pushq $0                        # no CPU error code
    pushq $0
    jmp exception_common
    .balign 16
exception_stub_1:
    pushq $0                        # no CPU error code
    pushq $1
    jmp exception_common
    .balign 16
exception_stub_2:
    pushq $0                        # no CPU error code
    pushq $2
    jmp exception_common
    .balign 16
exception_stub_3:
    pushq $0                        # no CPU error code
    pushq $3
    jmp exception_common
    .balign 16
exception_stub_4:
    pushq $0                        # no CPU error code
    pushq $4
    jmp exception_common
    .balign 16
exception_stub_5:
    pushq $0                        # no CPU error code
    pushq $5
    jmp exception_common
    .balign 16
exception_stub_6:
    pushq $0                        # no CPU error code
    pushq $6
    jmp exception_common
    .balign 16
exception_stub_7:
    pushq $0                        # no CPU error code
    pushq $7
    jmp exception_common
    .balign 16
exception_stub_8:
    pushq $8
    jmp exception_common
    .balign 16
exception_stub_9:
    pushq $0                        # no CPU error code
    pushq $9
    jmp exception_common
    .balign 16
exception_stub_10:
    pushq $10
    jmp exception_common
    .balign 16
exception_stub_11:
    pushq $11
    jmp exception_common
    .balign 16
exception_stub_12:
    pushq $12
    jmp exception_common
    .balign 16
exception_stub_13:
    pushq $13
    jmp exception_common
    .balign 16
exception_stub_14:
    pushq $14
    jmp exception_common
    .balign 16
exception_stub_15:
    pushq $0                        # no CPU error code
    pushq $15
    jmp exception_common
    .balign 16
exception_stub_16:
    pushq $0                        # no CPU error code
    pushq $16
    jmp exception_common
    .balign 16
exception_stub_17:
    pushq $17
    jmp exception_common
    .balign 16
exception_stub_18:
    pushq $0                        # no CPU error code
    pushq $18
    jmp exception_common
    .balign 16
exception_stub_19:
    pushq $0                        # no CPU error code
    pushq $19
    jmp exception_common
    .balign 16
exception_stub_20:
    pushq $0                        # no CPU error code
    pushq $20
    jmp exception_common
    .balign 16
exception_stub_21:
    pushq $21
    jmp exception_common
    .balign 16
exception_stub_22:
    pushq $0                        # no CPU error code
    pushq $22
    jmp exception_common
    .balign 16
exception_stub_23:
    pushq $0                        # no CPU error code
    pushq $23
    jmp exception_common
    .balign 16
exception_stub_24:
    pushq $0                        # no CPU error code
    pushq $24
    jmp exception_common
    .balign 16
exception_stub_25:
    pushq $0                        # no CPU error code
    pushq $25
    jmp exception_common
    .balign 16
exception_stub_26:
    pushq $0                        # no CPU error code
    pushq $26
    jmp exception_common
    .balign 16
exception_stub_27:
    pushq $0                        # no CPU error code
    pushq $27
    jmp exception_common
    .balign 16
exception_stub_28:
    pushq $0                        # no CPU error code
    pushq $28
    jmp exception_common
    .balign 16
exception_stub_29:
    pushq $29
    jmp exception_common
    .balign 16
exception_stub_30:
    pushq $30
    jmp exception_common
    .balign 16
exception_stub_31:
    pushq $0                        # no CPU error code
    pushq $31
    jmp exception_common

exception_common:
    movq %rsp, %rdi                 # rust_exception(frame: &ExceptionFrame)
    andq $-16, %rsp                 # the SysV ABI wants a 16-byte aligned stack at the call
    call rust_exception
    ud2                             # rust_exception never returns

    .section .rodata.exception_stub_table, "a", @progbits
    .balign 8
    .globl exception_stub_table
exception_stub_table:
    .quad exception_stub_0
    .quad exception_stub_1
    .quad exception_stub_2
    .quad exception_stub_3
    .quad exception_stub_4
    .quad exception_stub_5
    .quad exception_stub_6
    .quad exception_stub_7
    .quad exception_stub_8
    .quad exception_stub_9
    .quad exception_stub_10
    .quad exception_stub_11
    .quad exception_stub_12
    .quad exception_stub_13
    .quad exception_stub_14
    .quad exception_stub_15
    .quad exception_stub_16
    .quad exception_stub_17
    .quad exception_stub_18
    .quad exception_stub_19
    .quad exception_stub_20
    .quad exception_stub_21
    .quad exception_stub_22
    .quad exception_stub_23
    .quad exception_stub_24
    .quad exception_stub_25
    .quad exception_stub_26
    .quad exception_stub_27
    .quad exception_stub_28
    .quad exception_stub_29
    .quad exception_stub_30
    .quad exception_stub_31
