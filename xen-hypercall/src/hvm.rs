//! `HYPERVISOR_hvm_op` get/set param (`hvm/hvm_op.h`, `hvm/params.h`).

use crate::abi_layout;
use crate::errno::XenResult;
use crate::hypercall::{Hypervisor, argument_address_mut, number};
use crate::types::DomId;

pub const HVMOP_SET_PARAM: u64 = 0;
pub const HVMOP_GET_PARAM: u64 = 1;

/// HVM parameter indices (`hvm/params.h`).
pub mod param {
    /// `HVM_PARAM_CALLBACK_IRQ`: how event upcalls are delivered (`(2 << 56) | vector`).
    pub const CALLBACK_IRQ: u32 = 0;
    /// `HVM_PARAM_STORE_PFN`: the own xenstore ring page.
    pub const STORE_PFN: u32 = 1;
    /// `HVM_PARAM_STORE_EVTCHN`: the own xenstore event channel (0 before Xen 4.19 for the stub).
    pub const STORE_EVTCHN: u32 = 2;
    /// `HVM_PARAM_CONSOLE_PFN`: the PV console ring page (0xfefff for the stub).
    pub const CONSOLE_PFN: u32 = 17;
    /// `HVM_PARAM_CONSOLE_EVTCHN`: the PV console event channel.
    pub const CONSOLE_EVTCHN: u32 = 18;
}

/// `struct xen_hvm_param` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenHvmParam {
    pub domid: u16,
    pub pad: u16,
    pub index: u32,
    pub value: u64,
}

abi_layout!(XenHvmParam: 16 bytes { index: 4, value: 8 });

impl Hypervisor {
    /// `HVMOP_get_param` for the calling domain.
    pub fn get_hvm_param(&self, index: u32) -> XenResult<u64> {
        let mut request = XenHvmParam {
            domid: DomId::SELF.0,
            pad: 0,
            index,
            value: 0,
        };
        let address = argument_address_mut(&mut request);
        // SAFETY: Xen reads/writes one xen_hvm_param alive for the call; reading a parameter
        // changes nothing.
        unsafe { self.hypercall(number::HVM_OP, [HVMOP_GET_PARAM, address, 0, 0, 0]) }?;
        Ok(request.value)
    }

    /// `HVMOP_set_param` for the calling domain.
    ///
    /// # Safety
    ///
    /// Some parameters change how the vCPU is interrupted or which frames Xen uses; the
    /// caller must be prepared for the effect of `index` (e.g. have an IDT entry for a
    /// callback vector before enabling interrupts).
    pub unsafe fn set_hvm_param(&self, index: u32, value: u64) -> XenResult<()> {
        let mut request = XenHvmParam {
            domid: DomId::SELF.0,
            pad: 0,
            index,
            value,
        };
        let address = argument_address_mut(&mut request);
        // SAFETY: Xen reads one xen_hvm_param alive for the call; the caller accepts the effect.
        unsafe { self.hypercall(number::HVM_OP, [HVMOP_SET_PARAM, address, 0, 0, 0]) }?;
        Ok(())
    }
}
