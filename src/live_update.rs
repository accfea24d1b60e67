//! A live update in the stub: from `xenstore-control live-update`'s start to the new image's jump.
//!
//! The engine runs the `live-update` control command (upload, command line, start, abort:
//! docs/protocol.md, "Live update") and hands over a [`LiveUpdatePlan`] once the update may
//! go ahead. Here the stub checks the uploaded image, saves the state, checks that the state
//! reads back, stages the new image with its start info, and then (the point of no return)
//! releases what Xen writes into its memory and jumps (docs/live-update.md). Any failure
//! before that point is answered to `xenstore-control` with its reason, and the old image
//! goes on serving as if nothing had happened.

use alloc::string::String;
use core::fmt::Write;

use xen_hypercall::EventChannelPort;
use xenstore_engine::live_update::LiveUpdatePlan;
use xenstore_engine::migration::{FrontEndState, GlobalData};
use xenstore_engine::ring_host::RingHost;
use xenstore_engine::{Config, DomainId, Engine};

use crate::handover::{Handover, ImageLimits, check_image, new_command_line, stage};
use crate::xen::event_channel::EventChannels;
use crate::xen::memory_map::MemoryRegion;
use crate::xen::ring_port::XenPort;

/// The lowest address a new image may occupy (PVH images load at 1 MiB or above).
const LOWEST_IMAGE_ADDRESS: u64 = 1 << 20;
/// What the new image needs besides the staged bytes before its heap can hold the
/// restored store: its own start-up, plus twice the state (the parsed stream, and the
/// store it becomes).
const NEW_HEAP_MINIMUM_BYTES: u64 = 1 << 20;

/// What the stub knows that the live update needs.
pub struct Context<'a> {
    /// The running image's command line (the new one's, unless `-c` gave another).
    pub command_line: &'a [u8],
    /// The memory map the running image was given in its start info (empty: none).
    pub memory_map: &'a [MemoryRegion],
    /// The engine's configuration, to check that the saved state reads back.
    pub config: &'a Config,
    /// The port of `VIRQ_DOM_EXC`, which the new image binds again.
    pub domain_state_port: Option<EventChannelPort>,
    pub events: EventChannels,
}

/// The stub's answers for the stream: the local port bound to each ring, the unique ids of
/// domains when Xen gives them.
struct StubFrontEnd<'a> {
    host: &'a RingHost<XenPort>,
    unique_ids: &'a dyn Fn(DomainId) -> Option<u64>,
}

impl FrontEndState for StubFrontEnd<'_> {
    fn event_channel_port(&self, domain: DomainId) -> u32 {
        self.host.ring(domain).map_or(0, |ring| ring.local_port().0)
    }

    fn unique_id(&self, domain: DomainId) -> Option<u64> {
        (self.unique_ids)(domain)
    }

    fn global(&self) -> GlobalData {
        GlobalData::default()
    }
}

/// Runs the update `plan`. Returns only when it failed before the point of no return; the
/// requester has then been answered.
pub fn run(
    plan: LiveUpdatePlan,
    host: &mut RingHost<XenPort>,
    context: &Context<'_>,
    unique_ids: &dyn Fn(DomainId) -> Option<u64>,
) {
    let mut plan = plan;
    match prepare(&mut plan, host, context, unique_ids) {
        Ok((checked, staged, entry)) => {
            crate::console_line!(
                "live update: starting the new image (entry {entry:#x}, state {} bytes)",
                staged.bytes.len() as u64 + staged.destination - staged.state_address
            );
            // The point of no return: what Xen writes into our memory stops, the rings'
            // pages are unmapped (their ports stay bound, for the new image), and the
            // virtual IRQ's port is closed (the new image binds it again).
            host.port_mut().keep_ports_for_handover();
            host.detach_all();
            if let Some(port) = context.domain_state_port {
                let _ = context.events.close(port);
            }
            let hypervisor = host.port().hypervisor();
            if let Err(errno) = host.port_mut().clock_mut().unregister(&hypervisor) {
                log::warn!("live update: the runstate area stays registered ({errno})");
            }
            crate::xen::handover::jump(checked, staged)
        }
        Err(reason) => {
            crate::console_line!("live update: refused: {reason}");
            host.live_update_failed(plan, &reason);
        }
    }
}

/// Everything that can fail, before the point of no return.
fn prepare(
    plan: &mut LiveUpdatePlan,
    host: &RingHost<XenPort>,
    context: &Context<'_>,
    unique_ids: &dyn Fn(DomainId) -> Option<u64>,
) -> Result<
    (
        crate::xen::handover::CheckedJump,
        crate::handover::StagedImage,
        u32,
    ),
    String,
> {
    let text = |arguments: core::fmt::Arguments<'_>| {
        let mut reason = String::new();
        let _ = reason.write_fmt(arguments);
        reason
    };
    let heap_end = crate::runtime::heap::end_address();
    let image_limits = ImageLimits {
        lowest_address: LOWEST_IMAGE_ADDRESS,
        highest_end: heap_end.saturating_sub(NEW_HEAP_MINIMUM_BYTES),
    };
    let image =
        check_image(&plan.image, image_limits).map_err(|error| text(format_args!("{error}")))?;
    let front_end = StubFrontEnd { host, unique_ids };
    let state = host
        .write_live_update_state(plan, &front_end)
        .map_err(|error| text(format_args!("cannot save the state: {error:?}")))?;
    // The state must read back before the old image gives up: a stream the new image could
    // not read would leave the host without xenstore.
    match Engine::from_state(context.config.clone(), &state) {
        Ok((restored, _)) => drop(restored),
        Err(error) => {
            return Err(text(format_args!(
                "the saved state does not read back: {error:?}"
            )));
        }
    }
    let command_line = new_command_line(context.command_line, plan.command_line.as_deref())
        .ok_or_else(|| text(format_args!("too little memory for the command line")))?;
    let state_limit = heap_end
        .saturating_sub(NEW_HEAP_MINIMUM_BYTES)
        .saturating_sub(2 * state.len() as u64);
    let staged = stage(
        &plan.image,
        &image,
        &Handover {
            command_line: &command_line,
            memory_map: context.memory_map,
            state: &state,
        },
        ImageLimits {
            highest_end: state_limit,
            ..image_limits
        },
    )
    .map_err(|error| text(format_args!("{error}")))?;
    // The upload and the stream are in the staged bytes now.
    drop(core::mem::take(&mut plan.image));
    drop(state);
    let checked = crate::xen::handover::check_jump(&staged, image.entry)
        .map_err(|error| text(format_args!("{error}")))?;
    Ok((checked, staged, image.entry))
}

/// The restored store's figures for the console line the tests look for.
pub fn restored_summary(engine: &Engine, connections: usize, state_bytes: usize) -> String {
    let mut line = String::new();
    let _ = write!(
        line,
        "live update: restored {connections} connections, {} nodes, {} watches, {} transactions from {state_bytes} bytes of state",
        engine.node_count(),
        engine.watch_count(),
        engine.open_transaction_count()
    );
    line
}
