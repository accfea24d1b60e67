//! `HYPERVISOR_vcpu_op` (`xen/include/public/vcpu.h`): the vCPU's runstate memory area.
//!
//! Xen copies a vCPU's `vcpu_runstate_info` into a registered guest area whenever it
//! switches the vCPU in (`update_runstate_area()`, called from `context_switch()` in
//! xen/arch/x86/domain.c). While the vCPU runs, `state_entry_time` is therefore the Xen
//! system time at which it was last switched in: a clock reading that costs no `rdtsc`.

use core::sync::atomic::{AtomicU32, AtomicU64};

use crate::abi_layout;
use crate::errno::XenResult;
use crate::hypercall::{Hypervisor, argument_address, number};

pub const VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA: u64 = 5;

/// `RUNSTATE_*` values of [`VcpuRunstateInfo::state`].
pub const RUNSTATE_RUNNING: u32 = 0;
pub const RUNSTATE_RUNNABLE: u32 = 1;
pub const RUNSTATE_BLOCKED: u32 = 2;
pub const RUNSTATE_OFFLINE: u32 = 3;

/// `struct vcpu_runstate_info` (48 bytes on x86-64), written by Xen: hence atomics.
#[repr(C)]
#[derive(Debug, Default)]
pub struct VcpuRunstateInfo {
    /// `RUNSTATE_*` (an `int` in C).
    pub state: AtomicU32,
    pub pad0: AtomicU32,
    /// Xen system time (ns) at which the vCPU entered `state`.
    pub state_entry_time: AtomicU64,
    /// ns spent in each `RUNSTATE_*` so far.
    pub time: [AtomicU64; 4],
}

abi_layout!(VcpuRunstateInfo: 48 bytes { state_entry_time: 8, time: 16 });

impl VcpuRunstateInfo {
    pub const fn new() -> VcpuRunstateInfo {
        VcpuRunstateInfo {
            state: AtomicU32::new(0),
            pad0: AtomicU32::new(0),
            state_entry_time: AtomicU64::new(0),
            time: [
                AtomicU64::new(0),
                AtomicU64::new(0),
                AtomicU64::new(0),
                AtomicU64::new(0),
            ],
        }
    }
}

/// `struct vcpu_register_runstate_memory_area`: the area's guest-linear address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegisterRunstateMemoryArea {
    pub address: u64,
}

abi_layout!(RegisterRunstateMemoryArea: 8 bytes);

impl Hypervisor {
    /// `VCPUOP_register_runstate_memory_area`: Xen keeps `area` up to date for `vcpu` from
    /// now on (and writes it once at once when `vcpu` is the caller). `'static` because Xen
    /// writes it for as long as the domain lives; all atomics, so those writes are
    /// ordinary shared-memory updates to Rust.
    pub fn register_runstate_area(
        &self,
        vcpu: u32,
        area: &'static VcpuRunstateInfo,
    ) -> XenResult<()> {
        // SAFETY: from now on Xen writes one vcpu_runstate_info at `area`, a 'static of
        // atomics with that exact layout.
        unsafe { self.set_runstate_area(vcpu, argument_address(area)) }
    }

    /// `VCPUOP_register_runstate_memory_area` with a null address: Xen stops writing the
    /// area (a live update's old image, whose area the new image overwrites;
    /// docs/live-update.md in the stub's repository).
    ///
    /// # Safety
    /// Xen 4.17-4.22 write the record once at the new address before they stop, through the
    /// guest's page tables: the caller guarantees that linear address 0 is unmapped or holds
    /// nothing anyone reads (48 bytes there may change).
    pub unsafe fn unregister_runstate_area(&self, vcpu: u32) -> XenResult<()> {
        // SAFETY: the write at address 0 is the caller's to allow (above).
        unsafe { self.set_runstate_area(vcpu, 0) }
    }

    /// `VCPUOP_register_runstate_memory_area` for `address`.
    ///
    /// # Safety
    /// Xen writes a `vcpu_runstate_info` at `address` now and at every switch-in of `vcpu`
    /// (at 0: once, then never): the caller allows that.
    unsafe fn set_runstate_area(&self, vcpu: u32, address: u64) -> XenResult<()> {
        let request = RegisterRunstateMemoryArea { address };
        let request_address = argument_address(&request);
        // SAFETY: Xen reads the request (alive for the call); its writes at `address` are
        // the caller's to allow.
        unsafe {
            self.hypercall(
                number::VCPU_OP,
                [
                    VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA,
                    u64::from(vcpu),
                    request_address,
                    0,
                    0,
                ],
            )
        }?;
        Ok(())
    }
}
