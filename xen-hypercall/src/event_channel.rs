//! `HYPERVISOR_event_channel_op` (`xen/include/public/event_channel.h`).
//!
//! All operations here only create, connect, signal or close ports of the calling domain;
//! none touches guest memory, so all wrappers are safe.

use crate::abi_layout;
use crate::errno::XenResult;
use crate::hypercall::{Hypervisor, argument_address_mut, number};
use crate::types::{DomId, EventChannelPort};

pub const EVTCHNOP_BIND_INTERDOMAIN: u64 = 0;
pub const EVTCHNOP_BIND_VIRQ: u64 = 1;
pub const EVTCHNOP_CLOSE: u64 = 3;
pub const EVTCHNOP_SEND: u64 = 4;
pub const EVTCHNOP_STATUS: u64 = 5;
pub const EVTCHNOP_ALLOC_UNBOUND: u64 = 6;
pub const EVTCHNOP_UNMASK: u64 = 9;

/// `VIRQ_DOM_EXC`: "exceptional event for some domain" (global; `xen.h`).
pub const VIRQ_DOM_EXC: u32 = 3;

/// `struct evtchn_alloc_unbound` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnAllocUnbound {
    pub dom: u16,
    pub remote_dom: u16,
    /// OUT.
    pub port: u32,
}

abi_layout!(EvtchnAllocUnbound: 8 bytes { remote_dom: 2, port: 4 });

/// `struct evtchn_bind_interdomain` (12 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnBindInterdomain {
    pub remote_dom: u16,
    pub remote_port: u32,
    /// OUT.
    pub local_port: u32,
}

abi_layout!(EvtchnBindInterdomain: 12 bytes { remote_port: 4, local_port: 8 });

/// `struct evtchn_bind_virq` (12 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnBindVirq {
    pub virq: u32,
    pub vcpu: u32,
    /// OUT.
    pub port: u32,
}

abi_layout!(EvtchnBindVirq: 12 bytes { vcpu: 4, port: 8 });

/// `struct evtchn_send`, `evtchn_unmask`, `evtchn_close` (4 bytes each).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnPortArgument {
    pub port: u32,
}

abi_layout!(EvtchnPortArgument: 4 bytes);

/// `struct evtchn_status` (24 bytes); the union at offset 16 is kept raw.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnStatus {
    pub dom: u16,
    pub port: u32,
    /// OUT: `EVTCHNSTAT_*`.
    pub status: u32,
    /// OUT: the vCPU notified.
    pub vcpu: u32,
    /// OUT union: `unbound.dom` (u16 @16), `interdomain.dom` (u16 @16) + `.port` (u32 @20),
    /// `pirq`/`virq` (u32 @16).
    pub union_words: [u32; 2],
}

abi_layout!(EvtchnStatus: 24 bytes { port: 4, status: 8, vcpu: 12, union_words: 16 });

/// What a port is connected to (`EVTCHNSTAT_*` plus the union).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortStatus {
    Closed,
    /// Waiting for `remote_domain` to bind.
    Unbound {
        remote_domain: DomId,
    },
    Interdomain {
        remote_domain: DomId,
        remote_port: EventChannelPort,
    },
    Pirq(u32),
    Virq(u32),
    Ipi,
    /// A status number this crate does not know.
    Unknown(u32),
}

impl PortStatus {
    /// Decodes the output part of an [`EvtchnStatus`].
    pub const fn decode(status: &EvtchnStatus) -> PortStatus {
        let first = status.union_words[0];
        match status.status {
            0 => PortStatus::Closed,
            1 => PortStatus::Unbound {
                remote_domain: DomId(first as u16),
            },
            2 => PortStatus::Interdomain {
                remote_domain: DomId(first as u16),
                remote_port: EventChannelPort(status.union_words[1]),
            },
            3 => PortStatus::Pirq(first),
            4 => PortStatus::Virq(first),
            5 => PortStatus::Ipi,
            other => PortStatus::Unknown(other),
        }
    }
}

impl Hypervisor {
    fn event_channel_op<T>(&self, command: u64, argument: &mut T) -> XenResult<u64> {
        let address = argument_address_mut(argument);
        // SAFETY: every EVTCHNOP this module issues reads and writes exactly the struct
        // passed for its command, which lives for the call; none changes guest memory.
        unsafe { self.hypercall(number::EVENT_CHANNEL_OP, [command, address, 0, 0, 0]) }
    }

    /// `EVTCHNOP_alloc_unbound`: a new port of the calling domain that `remote_domain` may
    /// bind to (`DomId::SELF` is allowed as remote).
    pub fn alloc_unbound(&self, remote_domain: DomId) -> XenResult<EventChannelPort> {
        let mut request = EvtchnAllocUnbound {
            dom: DomId::SELF.0,
            remote_dom: remote_domain.0,
            port: 0,
        };
        self.event_channel_op(EVTCHNOP_ALLOC_UNBOUND, &mut request)?;
        Ok(EventChannelPort(request.port))
    }

    /// `EVTCHNOP_bind_interdomain`: connects a new local port to `remote_port` of
    /// `remote_domain`, which must be unbound and offered to us. Xen marks the new local port
    /// pending.
    pub fn bind_interdomain(
        &self,
        remote_domain: DomId,
        remote_port: EventChannelPort,
    ) -> XenResult<EventChannelPort> {
        let mut request = EvtchnBindInterdomain {
            remote_dom: remote_domain.0,
            remote_port: remote_port.0,
            local_port: 0,
        };
        self.event_channel_op(EVTCHNOP_BIND_INTERDOMAIN, &mut request)?;
        Ok(EventChannelPort(request.local_port))
    }

    /// `EVTCHNOP_bind_virq`: binds a virtual IRQ (global VIRQs need `vcpu` 0). From Xen 4.21
    /// binding a global VIRQ the domain is not the handler of fails with `EBUSY`.
    pub fn bind_virq(&self, virq: u32, vcpu: u32) -> XenResult<EventChannelPort> {
        let mut request = EvtchnBindVirq {
            virq,
            vcpu,
            port: 0,
        };
        self.event_channel_op(EVTCHNOP_BIND_VIRQ, &mut request)?;
        Ok(EventChannelPort(request.port))
    }

    /// An EVTCHNOP whose whole argument is one port (`evtchn_send`, `_unmask`, `_close`).
    fn port_op(&self, command: u64, port: EventChannelPort) -> XenResult<()> {
        let mut request = EvtchnPortArgument { port: port.0 };
        self.event_channel_op(command, &mut request)?;
        Ok(())
    }

    /// `EVTCHNOP_send`: notifies the other end of `port`.
    pub fn send(&self, port: EventChannelPort) -> XenResult<()> {
        self.port_op(EVTCHNOP_SEND, port)
    }

    /// `EVTCHNOP_unmask`: clears the mask bit and re-raises the upcall if `port` is pending.
    pub fn unmask(&self, port: EventChannelPort) -> XenResult<()> {
        self.port_op(EVTCHNOP_UNMASK, port)
    }

    /// `EVTCHNOP_close`: closes `port` (an interdomain peer's port becomes unbound again).
    pub fn close(&self, port: EventChannelPort) -> XenResult<()> {
        self.port_op(EVTCHNOP_CLOSE, port)
    }

    /// `EVTCHNOP_status` of one of the calling domain's ports.
    pub fn port_status(&self, port: EventChannelPort) -> XenResult<PortStatus> {
        let mut request = EvtchnStatus {
            dom: DomId::SELF.0,
            port: port.0,
            ..EvtchnStatus::default()
        };
        self.event_channel_op(EVTCHNOP_STATUS, &mut request)?;
        Ok(PortStatus::decode(&request))
    }

    /// The own domain id without CPUID: allocate a port with remote `DOMID_SELF`, read its
    /// status (Xen resolves `DOMID_SELF` to the real id in `unbound.dom`), close it. This
    /// is Mini-OS's `get_domid()`; on Xen >= 4.11 CPUID leaf base+4 is simpler.
    pub fn own_domid_from_event_channel(&self) -> XenResult<DomId> {
        let port = self.alloc_unbound(DomId::SELF)?;
        let status = self.port_status(port);
        let closed = self.close(port);
        let status = status?;
        closed?;
        match status {
            PortStatus::Unbound { remote_domain } => Ok(remote_domain),
            _ => Err(crate::errno::XenErrno::InvalidArgument),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_decoding() {
        let statuses = [
            (
                1,
                [5, 0],
                PortStatus::Unbound {
                    remote_domain: DomId(5),
                },
            ),
            (
                2,
                [0, 9],
                PortStatus::Interdomain {
                    remote_domain: DomId(0),
                    remote_port: EventChannelPort(9),
                },
            ),
            (77, [0, 0], PortStatus::Unknown(77)),
        ];
        for (status, union_words, decoded) in statuses {
            let raw = EvtchnStatus {
                status,
                union_words,
                ..EvtchnStatus::default()
            };
            assert_eq!(PortStatus::decode(&raw), decoded);
        }
    }
}
