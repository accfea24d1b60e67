//! `--hostile-ring` test mode: the kernel plays a guest that abuses its own xenstore ring.
//!
//! Only in the test image (cargo feature `test-modes`). Started with `xl create` as an
//! ordinary PVH guest, it proves its ring works with one legitimate `XS_READ`, then breaks
//! the ring protocol the way hostile guests did in the xenstore advisories
//! (docs/hostile-guests.md, "Ring abuse"): a producer index
//! more than a ring ahead, a consumer index past the producer, an oversized header, garbage
//! (the scenario `tests/xen-in-qemu/scenarios/hostile-ring.sh` checks the outcome). It reports
//! each step as `hostile: ...` on its console (port 0xE9) and then idles, so that a test can
//! check that the xenstore ignores this guest while serving everyone else.

use xen_hypercall::hvm::param;
use xen_hypercall::{EventChannelPort, XenErrno};
use xenstore_engine::ring::{Ring, offset};
use xenstore_engine::wire::{MessageHeader, encode_message};

use crate::kernel::BootedPlatform;
use crate::xen::event_channel::EventChannels;
use crate::xen::xenstore_ring::OwnRingPage;

const SECOND_NANOSECONDS: u64 = 1_000_000_000;

/// Writes `hostile: <text>` as a line of its own on port 0xE9 (Xen prints `(dN) hostile: ...`),
/// without the kernel's usual prefix, as the test contract asks.
fn say(arguments: core::fmt::Arguments<'_>) {
    struct DebugConsole;
    impl core::fmt::Write for DebugConsole {
        fn write_str(&mut self, text: &str) -> core::fmt::Result {
            crate::arch::x86_64::port_io::write_debug_console(text.as_bytes());
            Ok(())
        }
    }
    let _ = core::fmt::Write::write_fmt(&mut DebugConsole, format_args!("hostile: {arguments}\n"));
}

/// Runs the hostile sequence, then idles until destroyed.
pub fn run(platform: &BootedPlatform) -> ! {
    let hypervisor = platform.hypervisor;
    let frame = hypervisor.get_hvm_param(param::STORE_PFN).unwrap_or(0);
    let port = hypervisor.get_hvm_param(param::STORE_EVTCHN).unwrap_or(0);
    let (Some(page), Ok(shared_info), true) = (
        OwnRingPage::at_frame(frame),
        platform.shared_info,
        port != 0,
    ) else {
        say(format_args!(
            "no xenstore ring (store pfn {frame:#x}, port {port}); done"
        ));
        idle(None);
    };
    let events = EventChannels::new(hypervisor, shared_info.shared_info);
    let port = EventChannelPort(port as u32);
    let ring = Ring::new(&page);

    // 1. A legitimate request: the ring works before we break it.
    let request = encode_message(2, 1, 0, b"name\0");
    let written = ring.client_write(&request).unwrap_or(0);
    let _ = events.notify(port);
    let (value, _) = await_reply(&ring, &events, port, 5 * SECOND_NANOSECONDS);
    say(format_args!(
        "legitimate read of name ({written} bytes sent): {:?}",
        core::str::from_utf8(&value).unwrap_or("<not UTF-8>")
    ));

    // 1b. The same request without a notification: what a lost wake-up looks like to the
    // server. A server that sweeps its rings answers within seconds; one that trusts
    // notifications alone leaves the guest waiting until something else wakes it.
    let written = ring.client_write(&request).unwrap_or(0);
    let started_ns = events.now_ns();
    let (value, answered) = await_reply(&ring, &events, port, 20 * SECOND_NANOSECONDS);
    let waited_ms = events.now_ns().saturating_sub(started_ns) / 1_000_000;
    if answered {
        say(format_args!(
            "unannounced read of name ({written} bytes sent) answered after {waited_ms} ms: {:?}",
            core::str::from_utf8(&value).unwrap_or("<not UTF-8>")
        ));
    } else {
        say(format_args!(
            "unannounced read of name ({written} bytes sent) not answered within {waited_ms} ms"
        ));
        // Announce it now, so the abuse below starts from an idle ring.
        let _ = events.notify(port);
        let _ = await_reply(&ring, &events, port, 5 * SECOND_NANOSECONDS);
    }

    // 2. Abuse, notifying after each step. After the first, a correct server ignores us.
    let consumer = page.load_u32_acquire_at(offset::REQUEST_CONSUMER);
    page.store_at(offset::REQUEST_PRODUCER, consumer.wrapping_add(1025));
    kick(&events, port);
    say(format_args!(
        "req_prod = req_cons + 1025; error field now {}",
        ring.error()
    ));

    let response_producer = page.load_u32_acquire_at(offset::RESPONSE_PRODUCER);
    page.store_at(
        offset::RESPONSE_CONSUMER,
        response_producer.wrapping_add(2000),
    );
    kick(&events, port);
    say(format_args!(
        "rsp_cons = rsp_prod + 2000; error field now {}",
        ring.error()
    ));

    let oversized = MessageHeader {
        message_type: 2,
        request_id: 2,
        transaction_id: 0,
        payload_length_bytes: 5000,
    };
    page.store_at(offset::REQUEST_CONSUMER, 0);
    page.store_at(offset::REQUEST_PRODUCER, 0);
    let _ = ring.client_write(&oversized.to_bytes());
    kick(&events, port);
    say(format_args!(
        "header with len 5000; error field now {}",
        ring.error()
    ));

    let garbage = [0xA5u8; 1024];
    let _ = ring.client_write(&garbage);
    page.store_at(offset::REQUEST_PRODUCER, 0xFFFF_FFF0);
    kick(&events, port);
    say(format_args!(
        "1024 garbage bytes and a wild index; error field now {}",
        ring.error()
    ));

    say(format_args!("done"));
    idle(Some(&events));
}

/// Reads one reply from the ring, waiting at most `timeout_ns`: its payload, and whether
/// it was complete.
fn await_reply<M: xenstore_engine::ring::RingMemory + ?Sized>(
    ring: &Ring<'_, M>,
    events: &EventChannels,
    port: EventChannelPort,
    timeout_ns: u64,
) -> (alloc::vec::Vec<u8>, bool) {
    let mut reply = [0u8; 256];
    let mut received = 0;
    let deadline_ns = events.now_ns().saturating_add(timeout_ns);
    while events.now_ns() < deadline_ns {
        let _ = events.wait(&[port], Some(SECOND_NANOSECONDS / 10));
        events.take_pending(port);
        received += ring
            .client_read(reply.get_mut(received..).unwrap_or(&mut []))
            .unwrap_or(0);
        if received >= 16 {
            let header_bytes: [u8; 16] = reply
                .get(..16)
                .and_then(|bytes| bytes.try_into().ok())
                .unwrap_or([0; 16]);
            let header = MessageHeader::from_bytes(&header_bytes);
            if received >= 16 + header.payload_length_bytes as usize {
                return (reply.get(16..received).unwrap_or(&[]).to_vec(), true);
            }
        }
    }
    (reply.get(16..received).unwrap_or(&[]).to_vec(), false)
}

/// Notifies the server and gives it a moment.
fn kick(events: &EventChannels, port: EventChannelPort) {
    let _ = events.notify(port);
    let _ = events.wait(&[port], Some(SECOND_NANOSECONDS / 2));
    events.take_pending(port);
}

fn idle(events: Option<&EventChannels>) -> ! {
    loop {
        match events {
            Some(events) => {
                if let Err(errno) = events.wait(&[], Some(10 * SECOND_NANOSECONDS))
                    && errno != XenErrno::TimedOut
                {
                    log::debug!("poll: {errno}");
                }
            }
            None => crate::arch::x86_64::halt_forever(),
        }
    }
}
