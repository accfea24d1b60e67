//! `HYPERVISOR_sched_op` (`xen/include/public/sched.h`): yield, block, poll, shutdown.

use crate::abi_layout;
use crate::errno::{XenErrno, XenResult};
use crate::hypercall::{Hypervisor, argument_address, number};
use crate::types::EventChannelPort;

pub const SCHEDOP_YIELD: u64 = 0;
pub const SCHEDOP_BLOCK: u64 = 1;
pub const SCHEDOP_SHUTDOWN: u64 = 2;
pub const SCHEDOP_POLL: u64 = 3;

/// `SCHEDOP_poll` refuses more ports than this (`-EINVAL`; `xen/common/sched/core.c`).
pub const MAX_POLL_PORTS: usize = 128;

/// `SHUTDOWN_*` reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ShutdownReason {
    PowerOff = 0,
    Reboot = 1,
    Suspend = 2,
    Crash = 3,
    Watchdog = 4,
    SoftReset = 5,
}

/// `struct sched_shutdown` (4 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedShutdown {
    pub reason: u32,
}

abi_layout!(SchedShutdown: 4 bytes);

/// `struct sched_poll` (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedPoll {
    /// Guest handle: linear address of an `evtchn_port_t` array.
    pub ports: u64,
    pub nr_ports: u32,
    /// Absolute Xen system time in ns; 0 = no timeout.
    pub timeout: u64,
}

abi_layout!(SchedPoll: 24 bytes { nr_ports: 8, timeout: 16 });

impl Hypervisor {
    /// `SCHEDOP_yield`.
    pub fn yield_cpu(&self) -> XenResult<()> {
        // SAFETY: SCHEDOP_yield takes no argument and touches no guest memory.
        unsafe { self.hypercall(number::SCHED_OP, [SCHEDOP_YIELD, 0, 0, 0, 0]) }?;
        Ok(())
    }

    /// `SCHEDOP_block`. For a PVH guest this is only woken by event channels when an event
    /// callback (vector) is configured; polling designs should use [`Hypervisor::poll`].
    pub fn block(&self) -> XenResult<()> {
        // SAFETY: SCHEDOP_block takes no argument and touches no guest memory.
        unsafe { self.hypercall(number::SCHED_OP, [SCHEDOP_BLOCK, 0, 0, 0, 0]) }?;
        Ok(())
    }

    /// `SCHEDOP_poll`: sleeps until one of `ports` is pending (returns at once if one already
    /// is) or Xen system time reaches `timeout_ns` (absolute; 0 = no timeout). Works without
    /// any interrupt setup; the caller re-scans the pending bits afterwards.
    pub fn poll(&self, ports: &[EventChannelPort], timeout_ns: u64) -> XenResult<()> {
        if ports.len() > MAX_POLL_PORTS {
            return Err(XenErrno::InvalidArgument);
        }
        let request = SchedPoll {
            ports: ports.as_ptr() as u64,
            nr_ports: ports.len() as u32,
            timeout: timeout_ns,
        };
        let address = argument_address(&request);
        // SAFETY: Xen reads the sched_poll and `nr_ports` ports (repr(transparent) u32s), both
        // alive for the call.
        unsafe { self.hypercall(number::SCHED_OP, [SCHEDOP_POLL, address, 0, 0, 0]) }?;
        Ok(())
    }

    /// `SCHEDOP_shutdown`: stops the domain. Returns only if Xen refused the request.
    pub fn shutdown(&self, reason: ShutdownReason) -> XenErrno {
        let request = SchedShutdown {
            reason: reason as u32,
        };
        let address = argument_address(&request);
        // SAFETY: Xen reads one sched_shutdown, alive for the call.
        let result =
            unsafe { self.hypercall(number::SCHED_OP, [SCHEDOP_SHUTDOWN, address, 0, 0, 0]) };
        // A successful shutdown does not come back to the guest in practice (the domain is
        // paused and torn down); if it does, report it as "interrupted" so callers can retry.
        match result {
            Ok(_) => XenErrno::TryAgain,
            Err(errno) => errno,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_reasons_match_sched_h() {
        assert_eq!(ShutdownReason::PowerOff as u32, 0);
        assert_eq!(ShutdownReason::Crash as u32, 3);
        assert_eq!(ShutdownReason::SoftReset as u32, 5);
    }
}
