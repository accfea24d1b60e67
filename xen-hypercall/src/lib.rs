//! Xen hypercalls for x86-64 PVH guests: ABI structs and typed wrappers (`no_std`).
//!
//! This crate is the only place (together with the kernel's `arch` and `xen` platform
//! modules) that holds inline assembly and raw hypervisor ABI. Its layers, bottom up:
//!
//! - [`cpuid`]: finding Xen through the hypervisor CPUID leaves (`arch-x86/cpuid.h`).
//! - [`hypercall`]: the calling mechanism (hypercall page installed through the Xen MSR, or
//!   the `vmcall`/`vmmcall` instruction) and the [`Hypervisor`] handle every typed call hangs
//!   off. Holding a `Hypervisor` proves that Xen was found and hypercalls are set up.
//! - One module per Xen public header for the operations the stub domain needs:
//!   [`version`] (`version.h`), [`memory`] (`memory.h`), [`event_channel`] (`event_channel.h`),
//!   [`grant_table`] (`grant_table.h`), [`sched`] (`sched.h`), [`vcpu`] (`vcpu.h`), [`multicall`] (`xen.h`), [`hvm`] (`hvm/hvm_op.h`,
//!   `hvm/params.h`), [`domctl`] (`domctl.h`), [`console`] (`xen.h` console_io, `io/console.h`),
//!   and the shared data layout of [`shared_info`] (`xen.h`, `arch-x86/xen.h`).
//!
//! Design principles:
//! - Every ABI struct is `#[repr(C)]`, and an [`abi_layout!`] next to it checks its size and
//!   field offsets against the figures of Xen's public headers (`docs/xen-interface.md`) at
//!   compile time, for the kernel target as for the host.
//! - Failures come back as typed values ([`XenErrno`], [`grant_table::GrantStatus`]); nothing
//!   in this crate panics on a hypervisor result.
//! - Calls that can change what a guest-physical frame contains (and therefore break memory
//!   safety of the caller) are `unsafe fn` with a `# Safety` section; the rest are safe.
//! - Only x86-64 is supported (PVH); the crate still compiles on any x86-64 host so that the
//!   unit tests run under plain `cargo test`.
#![no_std]

#[cfg(not(target_arch = "x86_64"))]
compile_error!("xen-hypercall supports x86-64 PVH guests only");

#[cfg(test)]
extern crate std;

pub mod console;
pub mod cpuid;
pub mod domctl;
pub mod errno;
pub mod event_channel;
pub mod grant_table;
pub mod hvm;
pub mod hypercall;
mod layout;
pub mod memory;
pub mod multicall;
pub mod sched;
pub mod shared_info;
pub mod types;
pub mod vcpu;
pub mod version;

pub use errno::{XenErrno, XenResult};
pub use hypercall::{HypercallMechanism, HypercallPage, Hypervisor, InstallError};
pub use types::{DomId, EventChannelPort, Gfn, GrantRef, PAGE_SIZE_BYTES};
