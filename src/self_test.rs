//! `--self-test`: checks each platform layer on real Xen and prints one line per step.
//!
//! A test mode: only in the test image (cargo feature `test-modes`).
//!
//! Output contract (the Xen-in-QEMU harness greps these lines):
//! `xenstore-stubdom: self-test <step>: ok <detail>` or
//! `xenstore-stubdom: self-test <step>: FAILED <reason>`, for the steps `xen`, `hypercall`,
//! `shared-info`, `event-channel`, `memory-map`, `heap` in that order, then
//! `xenstore-stubdom: self-test complete: N ok, M failed`. The caller then powers off.
//! Grant mapping is not self-tested: it needs a page granted by *another* domain. A
//! loopback grant of an own RAM page is not a usable substitute: on Xen 4.17 (PVH dom0,
//! observed) mapping it at a second GFN unhooks the page from its original GFN.
//! Details are formatted into fixed-size strings, so a broken heap cannot break reporting.
// Those strings make `Result<StepText, StepText>` large; it is returned once per step.
#![allow(clippy::result_large_err)]

use core::fmt::Write;

use xen_hypercall::DomId;

use crate::console_line;
use crate::kernel::BootedPlatform;
use crate::xen::event_channel::EventChannels;

/// Text of one step's detail or failure reason.
pub type StepText = crate::kernel::CheckText;

type StepResult = Result<StepText, StepText>;

/// One self-test step.
type Check = fn(&BootedPlatform) -> StepResult;

/// Formats into a [`StepText`], cutting what does not fit.
macro_rules! text {
    ($($argument:tt)*) => {{
        let mut text = StepText::new();
        // A full buffer only truncates the detail.
        let _ = write!(text, $($argument)*);
        text
    }};
}

/// Runs every step and prints the summary.
pub fn run(platform: &BootedPlatform) {
    let steps: [(&str, Check); 6] = [
        ("xen", check_xen),
        ("hypercall", check_hypercall),
        ("shared-info", check_shared_info),
        ("event-channel", check_event_channel),
        ("memory-map", check_memory_map),
        ("heap", check_platform_heap),
    ];
    let mut passed = 0;
    let mut failed = 0;
    for (step, check) in steps {
        crate::runtime::trace::record(step, 0);
        match check(platform) {
            Ok(detail) => {
                passed += 1;
                console_line!("self-test {step}: ok {}", detail.as_str());
            }
            Err(reason) => {
                failed += 1;
                console_line!("self-test {step}: FAILED {}", reason.as_str());
            }
        }
    }
    console_line!("self-test complete: {passed} ok, {failed} failed");
}

fn check_xen(platform: &BootedPlatform) -> StepResult {
    let domid = platform.own_domid.map_err(|errno| {
        text!(
            "found Xen {} but not the own domid: {errno}",
            platform.cpuid_version
        )
    })?;
    Ok(text!(
        "found Xen, version {}, own domid {} (CPUID leaves at {:#x}, PV console {})",
        platform.cpuid_version,
        domid,
        platform.cpuid_leaves.base,
        if platform.pv_console_attached {
            "attached"
        } else {
            "absent"
        }
    ))
}

fn check_hypercall(platform: &BootedPlatform) -> StepResult {
    let hypervisor = &platform.hypervisor;
    let version = hypervisor
        .xen_version()
        .map_err(|errno| text!("XENVER_version failed: {errno}"))?;
    if version != platform.cpuid_version {
        return Err(text!(
            "XENVER_version says {version}, CPUID says {}",
            platform.cpuid_version
        ));
    }
    let mut detail = text!("xen_version {version} via {}", hypervisor.mechanism());
    match hypervisor.xen_extraversion() {
        Ok(extra) => {
            let _ = write!(detail, ", extraversion \"{}\"", extra.as_str());
        }
        Err(errno) => {
            let _ = write!(detail, ", extraversion unavailable ({errno})");
        }
    }
    if let Ok(features) = hypervisor.xen_features(0) {
        let _ = write!(detail, ", features[0] {features:#x}");
    }
    match hypervisor.grant_table_size() {
        Ok(size) => {
            let _ = write!(
                detail,
                ", grant table {}/{} frames",
                size.frames, size.max_frames
            );
        }
        Err(error) => {
            let _ = write!(detail, ", grant table size unavailable ({error})");
        }
    }
    Ok(detail)
}

fn check_shared_info(platform: &BootedPlatform) -> StepResult {
    let mapping = platform
        .shared_info
        .map_err(|errno| text!("XENMEM_add_to_physmap failed: {errno}"))?;
    let now_ns = crate::xen::shared_info::system_time_ns(mapping.shared_info);
    Ok(text!(
        "mapped at gfn {}, Xen system time {}.{:03} s",
        mapping.gfn,
        now_ns / 1_000_000_000,
        now_ns / 1_000_000 % 1000
    ))
}

/// Loopback pair A (unbound, offered to ourselves) <-> B (bound to A): an event sent on B
/// must make A pending (seen through `SCHEDOP_poll`), and one sent on A must make B pending
/// (found by the 2-level scan).
fn check_event_channel(platform: &BootedPlatform) -> StepResult {
    let mapping = platform
        .shared_info
        .map_err(|errno| text!("no shared_info ({errno})"))?;
    let events = EventChannels::new(platform.hypervisor, mapping.shared_info);
    let own_domid = platform.own_domid.unwrap_or(DomId::SELF);
    let port_a = events
        .alloc_unbound(own_domid)
        .map_err(|errno| text!("EVTCHNOP_alloc_unbound failed: {errno}"))?;
    let result = (|| {
        let port_b = events
            .bind_interdomain(own_domid, port_a)
            .map_err(|errno| text!("EVTCHNOP_bind_interdomain to port {port_a} failed: {errno}"))?;
        let outcome = (|| {
            // bind_interdomain marks the new port pending; start from a clean state.
            events.take_pending(port_b);
            events.take_pending(port_a);
            events
                .notify(port_b)
                .map_err(|errno| text!("EVTCHNOP_send on {port_b} failed: {errno}"))?;
            let pending_at_once = events.is_pending(port_a);
            events
                .wait(&[port_a], Some(100_000_000))
                .map_err(|errno| text!("SCHEDOP_poll on {port_a} failed: {errno}"))?;
            if !events.take_pending(port_a) {
                return Err(text!(
                    "sent on port {port_b}, port {port_a} not pending after SCHEDOP_poll"
                ));
            }
            events
                .notify(port_a)
                .map_err(|errno| text!("EVTCHNOP_send on {port_a} failed: {errno}"))?;
            let mut seen_b = false;
            events.drain_pending(|port| seen_b |= port == port_b);
            if !seen_b {
                return Err(text!(
                    "sent on port {port_a}, port {port_b} not found by the 2-level scan"
                ));
            }
            Ok(text!(
                "loopback ports {port_a}<->{port_b}: event sent on {port_b} seen pending on {port_a} \
                 via SCHEDOP_poll ({}), reverse event found by the 2-level scan",
                if pending_at_once {
                    "pending at once"
                } else {
                    "after waiting"
                }
            ))
        })();
        let closed = events.close(port_b);
        let detail = outcome?;
        closed.map_err(|errno| text!("EVTCHNOP_close of {port_b} failed: {errno}"))?;
        Ok(detail)
    })();
    let closed = events.close(port_a);
    let detail = result?;
    closed.map_err(|errno| text!("EVTCHNOP_close of {port_a} failed: {errno}"))?;
    Ok(detail)
}

fn check_memory_map(platform: &BootedPlatform) -> StepResult {
    let memory_map = platform
        .memory_map
        .as_ref()
        .map_err(|errno| text!("no memory map: XENMEM_memory_map failed: {errno}"))?;
    if memory_map.total_ram_bytes() == 0 {
        return Err(text!("{} entries but no RAM", memory_map.regions.len()));
    }
    let mut detail = text!(
        "{} entries from {}, {} MiB RAM",
        memory_map.regions.len(),
        memory_map.source,
        memory_map.total_ram_bytes() >> 20
    );
    match platform.reservation_pages {
        Ok(pages) => {
            let _ = write!(detail, ", {} pages ({} MiB) populated", pages, pages >> 8);
        }
        Err(errno) => {
            let _ = write!(detail, ", populated size unknown ({errno})");
        }
    }
    Ok(detail)
}

fn check_platform_heap(platform: &BootedPlatform) -> StepResult {
    match &platform.heap {
        Ok(_) => crate::kernel::check_heap(),
        Err(error) => Err(text!("no heap: {error}")),
    }
}
