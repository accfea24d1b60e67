//! Event channels on the 2-level ABI, waited for with `SCHEDOP_poll` (no interrupts).
//!
//! Xen sets a port's bit in `shared_info.evtchn_pending` (and, if unmasked, the selector
//! bit and `evtchn_upcall_pending` of vCPU 0), then wakes a vCPU blocked in `SCHEDOP_poll`
//! on that port (`xen/common/event_2l.c`, `xen/common/sched/core.c`). Polling needs no IDT,
//! no callback vector and has no lost-wake-up race: Xen checks the listed ports after
//! marking the vCPU blocked. The kernel's wait loop is therefore:
//! `wait(ports, deadline)` → [`EventChannels::drain_pending`] → handle each port → repeat.

use xen_hypercall::shared_info::{EVENT_WORDS, PORTS_PER_WORD, SharedInfo, port_word_and_bit};
use xen_hypercall::{DomId, EventChannelPort, Hypervisor, XenErrno, XenResult};

use core::sync::atomic::Ordering;

/// Clears and returns whether `port` was pending.
pub fn take_pending(shared_info: &SharedInfo, port: EventChannelPort) -> bool {
    match port_word_and_bit(port.0) {
        Some((word, bit)) => {
            shared_info.evtchn_pending[word].fetch_and(!bit, Ordering::AcqRel) & bit != 0
        }
        None => false,
    }
}

/// Whether `port` is pending (without clearing it).
pub fn is_pending(shared_info: &SharedInfo, port: EventChannelPort) -> bool {
    match port_word_and_bit(port.0) {
        Some((word, bit)) => shared_info.evtchn_pending[word].load(Ordering::Acquire) & bit != 0,
        None => false,
    }
}

/// Clears every pending, unmasked port and calls `handle` for it, lowest port first.
///
/// Follows the demux order of `xen.h`: clear `evtchn_upcall_pending`, then the selector,
/// then the pending bits. Only the words the selector names are scanned (Xen sets a word's
/// selector bit with every unmasked port it marks pending, `xen/common/event_2l.c`): all 64
/// words cost a tenth of the stub's instructions for a small request under QEMU's TCG. When
/// those words hold nothing, all 64 are scanned, so a port Xen marked without the selector
/// (pending while masked, then unmasked by someone else) cannot make the poll loop spin:
/// `SCHEDOP_poll` returns at once for a pending port that is never cleared. The selector
/// must be cleared in any case: Xen raises the upcall only on the 0→1 edge
/// (docs/xen-interface.md, "Event channels").
pub fn drain_pending(shared_info: &SharedInfo, mut handle: impl FnMut(EventChannelPort)) -> usize {
    let vcpu = &shared_info.vcpu_info[0];
    vcpu.evtchn_upcall_pending.store(0, Ordering::Release);
    let selector = vcpu.evtchn_pending_sel.swap(0, Ordering::AcqRel);
    let named = drain_words(shared_info, selector, &mut handle);
    if named > 0 {
        return named;
    }
    drain_words(shared_info, u64::MAX, &mut handle)
}

/// Clears and hands out the pending, unmasked ports of the words whose bits `words` has.
fn drain_words(
    shared_info: &SharedInfo,
    words: u64,
    handle: &mut impl FnMut(EventChannelPort),
) -> usize {
    let mut handled = 0;
    for word in (0..EVENT_WORDS).filter(|word| words & (1u64 << word) != 0) {
        loop {
            let ready = shared_info.evtchn_pending[word].load(Ordering::Acquire)
                & !shared_info.evtchn_mask[word].load(Ordering::Acquire);
            if ready == 0 {
                break;
            }
            let bit_index = ready.trailing_zeros() as usize;
            let bit = 1u64 << bit_index;
            if shared_info.evtchn_pending[word].fetch_and(!bit, Ordering::AcqRel) & bit != 0 {
                handled += 1;
                handle(EventChannelPort((word * PORTS_PER_WORD + bit_index) as u32));
            }
        }
    }
    handled
}

/// The kernel's event-channel front: hypercalls plus the shared_info bitmaps.
#[derive(Clone, Copy)]
pub struct EventChannels {
    hypervisor: Hypervisor,
    shared_info: &'static SharedInfo,
}

impl EventChannels {
    pub fn new(hypervisor: Hypervisor, shared_info: &'static SharedInfo) -> EventChannels {
        EventChannels {
            hypervisor,
            shared_info,
        }
    }

    /// A new local port that `remote` may bind (`DomId::SELF` for a loopback pair).
    #[cfg_attr(
        not(feature = "test-modes"),
        allow(dead_code, reason = "only the test image's --self-test uses it")
    )]
    pub fn alloc_unbound(&self, remote: DomId) -> XenResult<EventChannelPort> {
        let port = self.hypervisor.alloc_unbound(remote)?;
        crate::runtime::trace::record("evtchn.alloc_unbound", u64::from(port.0));
        Ok(port)
    }

    /// Binds to `remote`'s unbound `remote_port` (a guest's xenstore port, dom0's `--event`).
    /// Xen marks the new port pending; the first drain reports it.
    pub fn bind_interdomain(
        &self,
        remote: DomId,
        remote_port: EventChannelPort,
    ) -> XenResult<EventChannelPort> {
        let port = self.hypervisor.bind_interdomain(remote, remote_port)?;
        crate::runtime::trace::record("evtchn.bind_interdomain", u64::from(port.0));
        Ok(port)
    }

    /// Binds a global virtual IRQ (e.g. `VIRQ_DOM_EXC`) on vCPU 0.
    #[cfg_attr(
        target_os = "none",
        allow(dead_code, reason = "used once domain-death tracking is wired")
    )]
    pub fn bind_virq(&self, virq: u32) -> XenResult<EventChannelPort> {
        self.hypervisor.bind_virq(virq, 0)
    }

    /// Signals the remote end of `port`.
    pub fn notify(&self, port: EventChannelPort) -> XenResult<()> {
        self.hypervisor.send(port)
    }

    /// Closes `port` and forgets any pending event on it.
    pub fn close(&self, port: EventChannelPort) -> XenResult<()> {
        self.hypervisor.close(port)?;
        take_pending(self.shared_info, port);
        Ok(())
    }

    /// Clears and returns whether `port` was pending.
    #[cfg_attr(
        not(feature = "test-modes"),
        allow(dead_code, reason = "only the test image's test modes use it")
    )]
    pub fn take_pending(&self, port: EventChannelPort) -> bool {
        take_pending(self.shared_info, port)
    }

    /// Whether `port` is pending.
    pub fn is_pending(&self, port: EventChannelPort) -> bool {
        is_pending(self.shared_info, port)
    }

    /// See [`drain_pending`].
    pub fn drain_pending(&self, handle: impl FnMut(EventChannelPort)) -> usize {
        drain_pending(self.shared_info, handle)
    }

    /// Xen system time in ns.
    pub fn now_ns(&self) -> u64 {
        super::shared_info::system_time_ns(self.shared_info)
    }

    /// Notifies every port of `notify`, then sleeps as [`EventChannels::wait_until`] does,
    /// in one multicall (one guest exit instead of one per call). `Err(NotImplemented)`:
    /// Xen refused the multicall and nothing was done; use [`EventChannels::notify`] and
    /// [`EventChannels::wait_until`] instead.
    pub fn notify_then_wait_until(
        &self,
        notify: &[EventChannelPort],
        ports: &[EventChannelPort],
        deadline_ns: Option<u64>,
    ) -> XenResult<()> {
        self.hypervisor
            .send_then_poll(notify, ports, poll_deadline(deadline_ns))
    }

    /// Sleeps until one of `ports` is pending (at most 128) or `timeout_ns` passed
    /// (`None`: no timeout). An empty `ports` waits for any event of the domain, but then
    /// an event that arrived before the call is not noticed: pass a timeout.
    #[cfg_attr(
        not(feature = "test-modes"),
        allow(dead_code, reason = "only the test image's test modes use it")
    )]
    pub fn wait(&self, ports: &[EventChannelPort], timeout_ns: Option<u64>) -> XenResult<()> {
        let deadline_ns = timeout_ns.map(|timeout_ns| self.now_ns().saturating_add(timeout_ns));
        self.wait_until(ports, deadline_ns)
    }

    /// [`EventChannels::wait`] with an absolute deadline in Xen system time (`None`: none),
    /// for a caller that already knows the time: under Xen's emulated TSC, which Xen
    /// chooses for HVM-container guests when the host's TSC is not known to be invariant
    /// (as under QEMU), every `rdtsc` is a guest exit.
    pub fn wait_until(
        &self,
        ports: &[EventChannelPort],
        deadline_ns: Option<u64>,
    ) -> XenResult<()> {
        if ports.len() > xen_hypercall::sched::MAX_POLL_PORTS {
            return Err(XenErrno::InvalidArgument);
        }
        self.hypervisor.poll(ports, poll_deadline(deadline_ns))
    }
}

/// `SCHEDOP_poll`'s timeout field: 0 means "none", so a real deadline is never 0 (a
/// deadline already past ends the poll at once, as Xen's timer fires immediately).
fn poll_deadline(deadline_ns: Option<u64>) -> u64 {
    deadline_ns.map_or(0, |deadline_ns| deadline_ns.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::boxed::Box;
    use std::vec::Vec;

    fn zeroed_shared_info() -> Box<SharedInfo> {
        let zeroed = Box::<SharedInfo>::new_zeroed();
        // SAFETY: SharedInfo consists only of atomic integers, for which all-zero is valid.
        unsafe { zeroed.assume_init() }
    }

    fn set_pending(shared_info: &SharedInfo, port: u32) {
        let (word, bit) = port_word_and_bit(port).expect("valid port");
        shared_info.evtchn_pending[word].fetch_or(bit, Ordering::Relaxed);
    }

    #[test]
    fn take_pending_clears_once() {
        let shared_info = zeroed_shared_info();
        set_pending(&shared_info, 70);
        assert!(is_pending(&shared_info, EventChannelPort(70)));
        assert!(take_pending(&shared_info, EventChannelPort(70)));
        assert!(!take_pending(&shared_info, EventChannelPort(70)));
        assert!(!take_pending(&shared_info, EventChannelPort(5000)));
    }

    #[test]
    fn drain_reports_unmasked_ports_in_order() {
        let shared_info = zeroed_shared_info();
        for port in [3, 64, 65, 4095, 200] {
            set_pending(&shared_info, port);
        }
        let (word, bit) = port_word_and_bit(200).expect("valid port");
        shared_info.evtchn_mask[word].fetch_or(bit, Ordering::Relaxed);
        shared_info.vcpu_info[0]
            .evtchn_upcall_pending
            .store(1, Ordering::Relaxed);
        shared_info.vcpu_info[0]
            .evtchn_pending_sel
            .store(0b11 | 1 << 63, Ordering::Relaxed);
        let mut seen = Vec::new();
        let handled = drain_pending(&shared_info, |port| seen.push(port.0));
        assert_eq!(handled, 4);
        assert_eq!(seen, [3, 64, 65, 4095]);
        assert_eq!(
            shared_info.vcpu_info[0]
                .evtchn_upcall_pending
                .load(Ordering::Relaxed),
            0
        );
        assert_eq!(
            shared_info.vcpu_info[0]
                .evtchn_pending_sel
                .load(Ordering::Relaxed),
            0
        );
        // The masked port stays pending for later.
        assert!(is_pending(&shared_info, EventChannelPort(200)));
    }

    #[test]
    fn drain_scans_the_selected_words_and_all_words_when_they_are_empty() {
        let shared_info = zeroed_shared_info();
        let selector = &shared_info.vcpu_info[0].evtchn_pending_sel;
        set_pending(&shared_info, 5);
        set_pending(&shared_info, 130);
        selector.store(1, Ordering::Relaxed);
        let mut seen = Vec::new();
        assert_eq!(drain_pending(&shared_info, |port| seen.push(port.0)), 1);
        // Word 2 was not named: its port waits for its selector bit or an empty round.
        assert_eq!(seen, [5]);
        assert!(is_pending(&shared_info, EventChannelPort(130)));
        // Nothing in the named words (here: none named): every word is scanned.
        assert_eq!(drain_pending(&shared_info, |port| seen.push(port.0)), 1);
        assert_eq!(seen, [5, 130]);
        assert_eq!(drain_pending(&shared_info, |port| seen.push(port.0)), 0);
    }
}
