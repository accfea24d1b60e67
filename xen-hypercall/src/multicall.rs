//! `HYPERVISOR_multicall` (`xen/include/public/xen.h`): several hypercalls for one guest exit.
//!
//! A PVH guest pays a full VM exit and entry per hypercall. The stub domain's loop ends
//! every round the same way: notify the rings it answered (`EVTCHNOP_send`), then sleep
//! (`SCHEDOP_poll`). Issued as one multicall, that is one exit instead of one per call.
//! Xen runs the entries in order and writes each one's return value into its `result`
//! (`xen/common/multicall.c`); both operations are in the 64-bit HVM table
//! (`xen/include/hypercall-defs.c`: `multicall`, `event_channel_op`, `sched_op`). Xen may
//! preempt a long list and continue it by re-entering the same hypercall, which is
//! invisible to the caller. `SCHEDOP_poll` only marks the vCPU blocked (after checking the
//! listed ports, so no wake-up is lost); the switch away happens on the way out, which is
//! why the poll must be the last entry.

use crate::abi_layout;
use crate::errno::{XenErrno, XenResult};
use crate::event_channel::{EVTCHNOP_SEND, EvtchnPortArgument};
use crate::hypercall::{Hypervisor, argument_address, number};
use crate::sched::{MAX_POLL_PORTS, SCHEDOP_POLL, SchedPoll};
use crate::types::EventChannelPort;

/// `struct multicall_entry` (64 bytes on x86-64): `op`, `result`, `args[6]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MulticallEntry {
    /// Hypercall number (`__HYPERVISOR_*`).
    pub op: u64,
    /// Written by Xen: the call's return value (`-errno` on failure).
    pub result: u64,
    /// The call's arguments, as for a direct hypercall (pointers are guest-linear).
    pub args: [u64; 6],
}

abi_layout!(MulticallEntry: 64 bytes { result: 8, args: 16 });

/// Entries per multicall issued by [`Hypervisor::send_then_poll`]: the sends of one batch
/// plus the final poll. More ports are notified in further batches first.
pub const BATCH_ENTRIES: usize = 16;
/// The batch for a round that notifies at most one port: that send and the poll.
const SMALL_BATCH_ENTRIES: usize = 2;

impl Hypervisor {
    /// `HYPERVISOR_multicall`: runs `entries` in order within one hypercall.
    ///
    /// # Safety
    ///
    /// Every entry must be a hypercall that is safe to issue directly (see
    /// [`Hypervisor::hypercall`]): its pointer arguments valid for the whole call.
    pub unsafe fn multicall(&self, entries: &mut [MulticallEntry]) -> XenResult<()> {
        let address = entries.as_mut_ptr() as u64;
        let count = entries.len() as u64;
        // SAFETY: Xen reads and writes back `count` entries at `address`, alive and
        // exclusively borrowed for the call; the entries' own calls are the caller's
        // responsibility (this function's contract).
        unsafe { self.hypercall(number::MULTICALL, [address, count, 0, 0, 0]) }?;
        Ok(())
    }

    /// `EVTCHNOP_send` on every port of `notify`, then `SCHEDOP_poll` on `ports` until
    /// `timeout_ns` (absolute Xen system time; 0: no timeout), in as few guest exits as
    /// possible: one, when `notify` has fewer than [`BATCH_ENTRIES`] ports.
    ///
    /// A failed send (a port closed meanwhile) does not stop the others and is not
    /// reported, as a direct notification's failure is not acted on either. The result is
    /// the poll's. `Err(NotImplemented)` means Xen refused the multicall itself and did
    /// nothing: the caller should fall back to direct calls.
    pub fn send_then_poll(
        &self,
        notify: &[EventChannelPort],
        ports: &[EventChannelPort],
        timeout_ns: u64,
    ) -> XenResult<()> {
        if ports.len() > MAX_POLL_PORTS {
            return Err(XenErrno::InvalidArgument);
        }
        let mut chunks = notify.chunks(BATCH_ENTRIES - 1).peekable();
        let request = SchedPoll {
            ports: ports.as_ptr() as u64,
            nr_ports: ports.len() as u32,
            timeout: timeout_ns,
        };
        loop {
            let chunk = chunks.next().unwrap_or(&[]);
            let poll = chunks.peek().is_none().then_some(&request);
            // The usual round (one ring answered) in a two-entry batch: the arrays are built
            // on every round, and zeroing sixteen entries (1 KiB) was a twentieth of the
            // stub's instructions per small request under QEMU's TCG.
            let result = if chunk.len() < SMALL_BATCH_ENTRIES {
                self.send_batch::<SMALL_BATCH_ENTRIES>(chunk, poll)
            } else {
                self.send_batch::<BATCH_ENTRIES>(chunk, poll)
            };
            if poll.is_some() {
                return result;
            }
        }
    }

    /// One multicall: `EVTCHNOP_send` on each port of `chunk` (fewer than `N`), then the poll
    /// if given. Returns the poll's result, or `Ok` without one.
    fn send_batch<const N: usize>(
        &self,
        chunk: &[EventChannelPort],
        poll: Option<&SchedPoll>,
    ) -> XenResult<()> {
        let mut sends = [EvtchnPortArgument::default(); N];
        let mut entries = [MulticallEntry::default(); N];
        let mut used = 0;
        for (port, (send, entry)) in chunk.iter().zip(sends.iter_mut().zip(&mut entries)) {
            send.port = port.0;
            *entry = MulticallEntry {
                op: number::EVENT_CHANNEL_OP,
                result: 0,
                args: [EVTCHNOP_SEND, argument_address(send), 0, 0, 0, 0],
            };
            used += 1;
        }
        if let Some(request) = poll
            && let Some(entry) = entries.get_mut(used)
        {
            *entry = MulticallEntry {
                op: number::SCHED_OP,
                result: 0,
                args: [SCHEDOP_POLL, argument_address(request), 0, 0, 0, 0],
            };
            used += 1;
        }
        let batch = entries.get_mut(..used).unwrap_or(&mut []);
        // SAFETY: each entry is an EVTCHNOP_send reading one `sends` element, or the
        // SCHEDOP_poll reading `request` and the `ports` slice it points to; all of them
        // outlive the call, and neither operation writes guest memory.
        unsafe { self.multicall(batch) }?;
        match poll {
            Some(_) => {
                let poll_result = batch.last().map_or(0, |entry| entry.result);
                // The register holds a signed value; `result` is its bit pattern.
                XenErrno::from_return_value(poll_result as i64).map(|_| ())
            }
            None => Ok(()),
        }
    }
}
