//! CPU exceptions: an IDT for vectors 0–31 that reports the fault and stops the domain.
//!
//! The entry stubs are in `boot/exception_stubs.s`; each ends in `rust_exception`, which
//! panics with the vector, error code, RIP and CR2, so the panic handler prints the reason
//! and the trace ring and shuts the domain down (`SHUTDOWN_crash`). Exceptions run on the
//! current stack (no TSS/IST): a kernel stack overflow still ends in a triple fault.

use core::arch::asm;

use xen_hypercall::abi_layout;

/// Exceptions the CPU defines (vectors 0..32).
pub const EXCEPTION_VECTORS: usize = 32;

/// What the stubs leave on the stack (lowest address first).
#[repr(C)]
#[derive(Debug)]
pub struct ExceptionFrame {
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

// The stubs in `boot/exception_stubs.s` build this frame: seven words.
abi_layout!(ExceptionFrame: 56 bytes);

/// A 64-bit IDT gate descriptor (Intel SDM vol. 3, 6.14.1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdtEntry {
    pub offset_low: u16,
    pub selector: u16,
    pub interrupt_stack_table: u8,
    pub type_attributes: u8,
    pub offset_middle: u16,
    pub offset_high: u32,
    pub reserved: u32,
}

abi_layout!(IdtEntry: 16 bytes);

/// The 64-bit code segment of the boot GDT (`boot/pvh_entry.s`).
pub const KERNEL_CODE_SELECTOR: u16 = 0x08;
/// Present, DPL 0, 64-bit interrupt gate (interrupts stay disabled in the handler).
pub const INTERRUPT_GATE: u8 = 0x8e;

impl IdtEntry {
    /// An interrupt gate to `handler_address` in the kernel code segment.
    pub const fn interrupt_gate(handler_address: u64) -> IdtEntry {
        IdtEntry {
            offset_low: handler_address as u16,
            selector: KERNEL_CODE_SELECTOR,
            interrupt_stack_table: 0,
            type_attributes: INTERRUPT_GATE,
            offset_middle: (handler_address >> 16) as u16,
            offset_high: (handler_address >> 32) as u32,
            reserved: 0,
        }
    }
}

/// The architectural name of an exception vector.
pub const fn exception_name(vector: u64) -> &'static str {
    match vector {
        0 => "divide error",
        1 => "debug",
        2 => "NMI",
        3 => "breakpoint",
        4 => "overflow",
        5 => "bound range exceeded",
        6 => "invalid opcode",
        7 => "device not available",
        8 => "double fault",
        10 => "invalid TSS",
        11 => "segment not present",
        12 => "stack-segment fault",
        13 => "general protection fault",
        14 => "page fault",
        16 => "x87 floating-point error",
        17 => "alignment check",
        18 => "machine check",
        19 => "SIMD floating-point error",
        20 => "virtualization exception",
        21 => "control protection exception",
        _ => "reserved exception",
    }
}

/// The faulting linear address of the last page fault.
fn read_cr2() -> u64 {
    let value: u64;
    // SAFETY: reading CR2 at CPL 0 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

#[cfg(target_os = "none")]
pub use installation::install_exception_handlers;

#[cfg(target_os = "none")]
mod installation {
    use super::{EXCEPTION_VECTORS, ExceptionFrame, IdtEntry, exception_name, read_cr2};

    core::arch::global_asm!(
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/boot/exception_stubs.s"
        )),
        options(att_syntax, raw)
    );

    unsafe extern "C" {
        /// Addresses of the 32 stubs, from `boot/exception_stubs.s`.
        static exception_stub_table: [u64; EXCEPTION_VECTORS];
    }

    /// `lidt` operand.
    #[repr(C, packed)]
    struct IdtPointer {
        limit: u16,
        base: u64,
    }

    static IDT: spin::Once<[IdtEntry; EXCEPTION_VECTORS]> = spin::Once::new();

    /// Builds the IDT and loads it. Call once, first thing in Rust.
    pub fn install_exception_handlers() {
        let idt = IDT.call_once(|| {
            // SAFETY: the table is initialised data in .rodata, written by the assembler.
            let stubs = unsafe { &exception_stub_table };
            let mut entries = [IdtEntry::default(); EXCEPTION_VECTORS];
            for (entry, &stub) in entries.iter_mut().zip(stubs.iter()) {
                *entry = IdtEntry::interrupt_gate(stub);
            }
            entries
        });
        let pointer = IdtPointer {
            limit: (core::mem::size_of_val(idt) - 1) as u16,
            base: idt.as_ptr() as u64,
        };
        // SAFETY: the IDT is a static that lives forever, its gates point at the stubs in
        // the kernel code segment 0x08 of the boot GDT; `lidt` only reads the pointer.
        unsafe {
            core::arch::asm!("lidt [{}]", in(reg) &pointer, options(readonly, nostack, preserves_flags))
        };
    }

    /// Called by the stubs; reports the exception through the panic handler.
    #[unsafe(no_mangle)]
    extern "C" fn rust_exception(frame: &ExceptionFrame) -> ! {
        let cr2 = if frame.vector == 14 { read_cr2() } else { 0 };
        crate::runtime::trace::record("cpu.exception", frame.vector);
        panic!(
            "CPU exception {} ({}), error code {:#x}, rip {:#x}, rsp {:#x}, cr2 {:#x}",
            frame.vector,
            exception_name(frame.vector),
            frame.error_code,
            frame.rip,
            frame.rsp,
            cr2
        );
    }
}

/// Triggers a page fault on purpose (`--debug-crash page-fault`, test image only), to test
/// this module.
#[cfg(feature = "test-modes")]
pub fn trigger_page_fault() -> ! {
    // 64 GiB: canonical, but above the 8 GiB identity map, so not mapped and the load
    // raises a page fault (not a general protection fault).
    let unmapped_address: u64 = 0x10_0000_0000;
    // SAFETY: the load faults before it produces a value; the exception handler never
    // returns, so no code after it runs. No Rust-visible memory is involved.
    unsafe {
        asm!("mov {0}, qword ptr [{0}]", inout(reg) unmapped_address => _, options(nostack, readonly))
    };
    // Only reached if the address was unexpectedly mapped.
    panic!("the page-fault test read {unmapped_address:#x} without faulting");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_encoding() {
        let gate = IdtEntry::interrupt_gate(0x1234_5678_9abc_def0);
        assert_eq!(gate.offset_low, 0xdef0);
        assert_eq!(gate.offset_middle, 0x9abc);
        assert_eq!(gate.offset_high, 0x1234_5678);
        assert_eq!(gate.selector, 0x08);
        assert_eq!(gate.type_attributes, 0x8e);
    }

    #[test]
    fn names() {
        assert_eq!(exception_name(14), "page fault");
        assert_eq!(exception_name(13), "general protection fault");
        assert_eq!(exception_name(31), "reserved exception");
    }
}
