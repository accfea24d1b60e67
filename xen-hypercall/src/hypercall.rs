//! The hypercall mechanism: hypercall page or `vmcall`/`vmmcall`, and the [`Hypervisor`] handle.
//!
//! Register convention for a 64-bit HVM/PVH caller (`xen/arch/x86/hvm/hypercall.c`): number in
//! `rax`, arguments in `rdi, rsi, rdx, r10, r8`, result in `rax` (`>= 0` success, `-errno`
//! failure). Debug builds of Xen overwrite the argument registers on return
//! (`clobber_regs64()`), so all five are declared clobbered on every call. Pointer arguments
//! are guest-*linear* addresses; GFN fields inside structures are guest-physical.

use core::cell::UnsafeCell;

use crate::cpuid::{CpuVendor, XenCpuidLeaves};
use crate::errno::{XenErrno, XenResult};

/// Hypercall numbers (`xen/include/public/xen.h`, `__HYPERVISOR_*`).
pub mod number {
    pub const MEMORY_OP: u64 = 12;
    pub const MULTICALL: u64 = 13;
    pub const XEN_VERSION: u64 = 17;
    pub const CONSOLE_IO: u64 = 18;
    pub const GRANT_TABLE_OP: u64 = 20;
    pub const VCPU_OP: u64 = 24;
    pub const SCHED_OP: u64 = 29;
    pub const EVENT_CHANNEL_OP: u64 = 32;
    pub const HVM_OP: u64 = 34;
    pub const DOMCTL: u64 = 36;
}

/// Bytes per hypercall stub in the hypercall page (`call hypercall_page + 32 * nr`).
pub const HYPERCALL_STUB_SIZE_BYTES: u64 = 32;

/// The x86 `ret` opcode, written over the page before installing it: if Xen does not fill
/// the page, byte 0 stays `0xc3` (the same check XTF and Solo5 do).
const RET_OPCODE: u8 = 0xc3;

/// Issues `$instruction` with the register convention of the module documentation: the
/// number in `rax` (the result comes back there), the five arguments in `rdi, rsi, rdx, r10,
/// r8`, all clobbered; `$operands` adds what the instruction needs besides. Evaluates to the
/// raw result (`i64`). Must be used inside an `unsafe` block.
macro_rules! hypercall_asm {
    ($instruction:literal, $number:expr, $arguments:expr, $($operands:tt)*) => {{
        let result: i64;
        core::arch::asm!(
            $instruction,
            $($operands)*,
            inlateout("rax") $number => result,
            inlateout("rdi") $arguments[0] => _,
            inlateout("rsi") $arguments[1] => _,
            inlateout("rdx") $arguments[2] => _,
            inlateout("r10") $arguments[3] => _,
            inlateout("r8") $arguments[4] => _,
        );
        result
    }};
}

/// How hypercalls are issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HypercallMechanism {
    /// `call` into the hypercall page Xen wrote at this linear (= guest-physical) address.
    Page { address: u64 },
    /// The Intel `vmcall` instruction.
    Vmcall,
    /// The AMD `vmmcall` instruction (what a guest sees under QEMU TCG, which emulates SVM).
    Vmmcall,
}

impl core::fmt::Display for HypercallMechanism {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            HypercallMechanism::Page { address } => {
                write!(formatter, "hypercall page at {address:#x}")
            }
            HypercallMechanism::Vmcall => formatter.write_str("vmcall"),
            HypercallMechanism::Vmmcall => formatter.write_str("vmmcall"),
        }
    }
}

/// A page-aligned, page-sized buffer for Xen to fill with hypercall stubs.
///
/// Put one in a `static` of the kernel image: it must be writable guest RAM, mapped executable.
#[repr(C, align(4096))]
pub struct HypercallPage(UnsafeCell<[u8; 4096]>);

// SAFETY: the page is written only in `Hypervisor::install_hypercall_page` (by this crate and
// by Xen), before any `Hypervisor` exists that could execute it; afterwards it is only executed.
unsafe impl Sync for HypercallPage {}

impl HypercallPage {
    /// A zeroed page.
    pub const fn new() -> HypercallPage {
        HypercallPage(UnsafeCell::new([0; 4096]))
    }

    /// The linear address of the page.
    pub fn address(&self) -> u64 {
        self.0.get() as u64
    }
}

impl Default for HypercallPage {
    fn default() -> Self {
        Self::new()
    }
}

/// Why the hypercall page could not be installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstallError {
    /// The page address is not 4 KiB aligned (Xen would raise #GP on the MSR write).
    Misaligned,
    /// After the MSR write the page still starts with the `ret` poison: Xen did not fill it.
    PageNotWritten,
}

/// Proof that Xen is present and hypercalls work; every typed hypercall is a method on it.
///
/// `Copy` and tiny, so it can be stored in a global for the panic handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hypervisor {
    mechanism: HypercallMechanism,
    leaves: XenCpuidLeaves,
}

impl Hypervisor {
    /// Installs `page` as the hypercall page by writing its guest-physical address to the Xen
    /// MSR named by CPUID leaf base+2 (`xen/arch/x86/msr.c` `guest_wrmsr_xen()`).
    ///
    /// # Safety
    ///
    /// - The CPU must run at CPL 0 on Xen as described by `leaves` (the MSR exists).
    /// - `page_guest_physical_address` must be the guest-physical address of `page`, and the
    ///   page's linear address must map to it (an identity map) with execute permission.
    pub unsafe fn install_hypercall_page(
        leaves: XenCpuidLeaves,
        page: &'static HypercallPage,
        page_guest_physical_address: u64,
    ) -> Result<Hypervisor, InstallError> {
        if !page_guest_physical_address.is_multiple_of(crate::types::PAGE_SIZE_BYTES) {
            return Err(InstallError::Misaligned);
        }
        let first_byte = page.0.get().cast::<u8>();
        // SAFETY: `first_byte` points into the page, which nothing else accesses before a
        // `Hypervisor` exists (see the `Sync` impl); volatile because Xen writes it behind
        // the compiler's back.
        unsafe { first_byte.write_volatile(RET_OPCODE) };
        // SAFETY: the caller guarantees we run on Xen at CPL 0, so the MSR from leaf base+2
        // exists, and that the address is the page's guest-physical address.
        unsafe { write_msr(leaves.hypercall_page_msr(), page_guest_physical_address) };
        // SAFETY: as above; Xen has finished writing the page when wrmsr returns.
        let written = unsafe { first_byte.read_volatile() };
        if written == RET_OPCODE {
            return Err(InstallError::PageNotWritten);
        }
        Ok(Hypervisor {
            mechanism: HypercallMechanism::Page {
                address: page.address(),
            },
            leaves,
        })
    }

    /// A handle that issues `vmcall` or `vmmcall` directly, chosen by CPU vendor.
    ///
    /// Returns `None` for an unknown vendor, where neither instruction is known to be right.
    pub fn with_vendor_instruction(leaves: XenCpuidLeaves) -> Option<Hypervisor> {
        let mechanism = match CpuVendor::detect() {
            CpuVendor::Intel => HypercallMechanism::Vmcall,
            CpuVendor::Amd => HypercallMechanism::Vmmcall,
            CpuVendor::Other => return None,
        };
        Some(Hypervisor { mechanism, leaves })
    }

    /// How this handle issues hypercalls.
    pub fn mechanism(&self) -> HypercallMechanism {
        self.mechanism
    }

    /// Where Xen's CPUID leaves are.
    pub fn cpuid_leaves(&self) -> XenCpuidLeaves {
        self.leaves
    }

    /// Issues hypercall `number` with up to five arguments and returns raw `rax`.
    ///
    /// # Safety
    ///
    /// The arguments must be valid for the hypercall: every pointer argument must point to
    /// memory of the size and layout the hypercall expects, valid for Xen to read and/or write
    /// for the duration of the call, and the operation must not change the mapping of memory
    /// the program relies on (unless the caller accounts for that).
    pub unsafe fn raw_hypercall(&self, number: u64, arguments: [u64; 5]) -> i64 {
        match self.mechanism {
            HypercallMechanism::Page { address } => {
                let stub = address + number * HYPERCALL_STUB_SIZE_BYTES;
                // SAFETY: `stub` is inside the hypercall page Xen wrote (installation checked
                // it); the stub is `mov $nr, %eax; vmcall|vmmcall; ret` and needs a stack
                // for the return address, which asm without `nostack` may use. The caller
                // guarantees the arguments are valid for this hypercall.
                unsafe {
                    hypercall_asm!(
                        "call {stub}", number, arguments,
                        stub = in(reg) stub, out("rcx") _, out("r11") _
                    )
                }
            }
            HypercallMechanism::Vmcall => {
                // SAFETY: the vendor check chose vmcall for an Intel-compatible CPU; the
                // caller guarantees the arguments are valid for this hypercall.
                unsafe { hypercall_asm!("vmcall", number, arguments, options(nostack)) }
            }
            HypercallMechanism::Vmmcall => {
                // SAFETY: the vendor check chose vmmcall for an AMD-compatible CPU; the
                // caller guarantees the arguments are valid for this hypercall.
                unsafe { hypercall_asm!("vmmcall", number, arguments, options(nostack)) }
            }
        }
    }

    /// [`Hypervisor::raw_hypercall`] with the result converted to [`XenResult`].
    ///
    /// # Safety
    ///
    /// As for [`Hypervisor::raw_hypercall`].
    pub unsafe fn hypercall(&self, number: u64, arguments: [u64; 5]) -> XenResult<u64> {
        // SAFETY: forwarded contract.
        let raw = unsafe { self.raw_hypercall(number, arguments) };
        XenErrno::from_return_value(raw)
    }
}

/// Writes a model-specific register.
///
/// # Safety
///
/// Must run at CPL 0; `msr` must exist and accept `value` (otherwise #GP), and writing it
/// must not break memory safety.
unsafe fn write_msr(msr: u32, value: u64) {
    // SAFETY: forwarded contract; wrmsr takes ecx = msr, edx:eax = value.
    unsafe {
        core::arch::asm!(
            "wrmsr",
            in("ecx") msr,
            in("eax") value as u32,
            in("edx") (value >> 32) as u32,
            options(nostack, preserves_flags),
        );
    }
}

/// Converts a reference to a hypercall argument (a guest-linear address).
pub(crate) fn argument_address<T>(value: &T) -> u64 {
    value as *const T as u64
}

/// Converts a mutable reference to a hypercall argument (a guest-linear address).
pub(crate) fn argument_address_mut<T>(value: &mut T) -> u64 {
    value as *mut T as u64
}
