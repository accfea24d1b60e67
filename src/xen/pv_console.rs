//! The PV console ring (`xen/include/public/io/console.h`), an optional second console.
//!
//! The toolstack publishes the ring page and event channel as `HVM_PARAM_CONSOLE_PFN` and
//! `HVM_PARAM_CONSOLE_EVTCHN`. The consumer is xenconsoled in dom0, which for a xenstore
//! stub only appears after xenstore works: until then the 2 KiB ring fills up, and further
//! output is dropped rather than waited for (waiting would hang the stub; docs/xen-interface.md,
//! "Start info and command line").

use core::sync::atomic::Ordering;

use xen_hypercall::console::{CONSOLE_OUTPUT_SIZE_BYTES, XenconsInterface};
use xen_hypercall::{EventChannelPort, Hypervisor};

/// Writer side of a PV console ring.
pub struct PvConsoleRing {
    ring: &'static XenconsInterface,
    port: EventChannelPort,
    hypervisor: Hypervisor,
    dropped_bytes: u64,
}

/// Copies as much of `bytes` into the output ring as fits, publishing the new producer index.
/// Returns how many bytes were written.
pub fn push_output(ring: &XenconsInterface, bytes: &[u8]) -> usize {
    let consumer = ring.out_cons.load(Ordering::Acquire);
    let mut producer = ring.out_prod.load(Ordering::Relaxed);
    let mut written = 0;
    for &byte in bytes {
        // Indices are free-running u32s; the difference is the fill level even across wrap.
        if producer.wrapping_sub(consumer) as usize >= CONSOLE_OUTPUT_SIZE_BYTES {
            break;
        }
        ring.output[producer as usize % CONSOLE_OUTPUT_SIZE_BYTES].store(byte, Ordering::Relaxed);
        producer = producer.wrapping_add(1);
        written += 1;
    }
    // Release: the bytes are visible before the index that publishes them (console.h).
    ring.out_prod.store(producer, Ordering::Release);
    written
}

impl PvConsoleRing {
    /// Looks up the console ring from the HVM params and attaches to it. `None` if the
    /// toolstack provided none.
    #[cfg(target_os = "none")]
    pub fn from_hvm_params(hypervisor: Hypervisor) -> Option<PvConsoleRing> {
        use xen_hypercall::hvm::param;
        let frame = hypervisor.get_hvm_param(param::CONSOLE_PFN).ok()?;
        let port = hypervisor.get_hvm_param(param::CONSOLE_EVTCHN).ok()?;
        if frame == 0 || port == 0 {
            return None;
        }
        let address = frame.checked_mul(xen_hypercall::PAGE_SIZE_BYTES)?;
        if address.checked_add(xen_hypercall::PAGE_SIZE_BYTES)?
            > crate::arch::x86_64::IDENTITY_MAPPED_LIMIT_BYTES
        {
            return None;
        }
        // SAFETY: the frame is the console page the toolstack populated for us (a special
        // page, 0xfefff for the stub), page-aligned and inside the identity map; it is only
        // accessed through atomics because xenconsoled shares it.
        let ring = unsafe { &*(address as *const XenconsInterface) };
        Some(PvConsoleRing {
            ring,
            port: EventChannelPort(port as u32),
            hypervisor,
            dropped_bytes: 0,
        })
    }

    /// Appends text, turning `\n` into `\r\n` (the ring is a raw terminal stream).
    pub fn write_text(&mut self, text: &[u8]) {
        for line_piece in text.split_inclusive(|&byte| byte == b'\n') {
            let (body, newline) = match line_piece.split_last() {
                Some((b'\n', body)) => (body, true),
                _ => (line_piece, false),
            };
            self.write_raw(body);
            if newline {
                self.write_raw(b"\r\n");
            }
        }
    }

    fn write_raw(&mut self, bytes: &[u8]) {
        let written = push_output(self.ring, bytes);
        self.dropped_bytes += (bytes.len() - written) as u64;
    }

    /// Tells the console backend that output is waiting.
    pub fn notify(&self) {
        // Best effort: a console that cannot be notified is not worth failing for.
        let _ = self.hypervisor.send(self.port);
    }

    /// The console's event channel.
    pub fn port(&self) -> EventChannelPort {
        self.port
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::{AtomicU8, AtomicU32};
    use std::boxed::Box;

    fn empty_ring() -> Box<XenconsInterface> {
        Box::new(XenconsInterface {
            input: [const { AtomicU8::new(0) }; 1024],
            output: [const { AtomicU8::new(0) }; 2048],
            in_cons: AtomicU32::new(0),
            in_prod: AtomicU32::new(0),
            out_cons: AtomicU32::new(0),
            out_prod: AtomicU32::new(0),
            connection: AtomicU8::new(0),
        })
    }

    #[test]
    fn writes_and_publishes() {
        let ring = empty_ring();
        assert_eq!(push_output(&ring, b"hello"), 5);
        assert_eq!(ring.out_prod.load(Ordering::Relaxed), 5);
        assert_eq!(ring.output[4].load(Ordering::Relaxed), b'o');
    }

    #[test]
    fn drops_when_full_and_wraps() {
        let ring = empty_ring();
        let big = [b'x'; 3000];
        assert_eq!(push_output(&ring, &big), 2048);
        assert_eq!(push_output(&ring, b"y"), 0);
        ring.out_cons.store(2040, Ordering::Relaxed);
        assert_eq!(push_output(&ring, b"0123456789"), 10);
        assert_eq!(ring.output[0].load(Ordering::Relaxed), b'0');
        assert_eq!(ring.out_prod.load(Ordering::Relaxed), 2058);
    }

    #[test]
    fn free_running_indices_wrap_around_u32() {
        let ring = empty_ring();
        ring.out_cons.store(u32::MAX - 1, Ordering::Relaxed);
        ring.out_prod.store(u32::MAX - 1, Ordering::Relaxed);
        assert_eq!(push_output(&ring, b"abcd"), 4);
        assert_eq!(ring.out_prod.load(Ordering::Relaxed), 2);
    }
}
