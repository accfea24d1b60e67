//! Watch events (`docs/protocol.md`, "Watches"): the changes a request made, and the
//! special events of domains, turned into `XS_WATCH_EVENT` messages for the watches that
//! match and may be told, and queued after the reply.

use crate::connection::OutputMessage;
use crate::engine::{ACCESS_LOG_TARGET, Engine, Printable};
use crate::fallible;
use crate::operations::{self, Change};
use crate::path;
use crate::permissions::{Access, Permissions};
use crate::quota::QuotaKind;
use crate::watch::Watch;
use crate::wire::{HEADER_SIZE_BYTES, MessageHeader, MessageType, PAYLOAD_MAX_BYTES};
use crate::{ConnectionId, DomainId, StoreError, StoreResult};
use alloc::vec::Vec;

impl Engine {
    /// Whether a change may be told to `state` (`watch.c:watch_permitted()`): it can read
    /// the node, could read it before a permission change, or can read its parent.
    fn watch_permitted(&self, connection: ConnectionId, change: &Change) -> bool {
        let Some(caller) = self.caller(connection) else {
            return false;
        };
        if caller.privileged {
            return true;
        }
        let generation = self.tree.current_generation();
        let readable = |permissions: &Permissions| {
            operations::access_under(&caller, permissions, generation, &self.domains)
                .allows(Access::READ)
        };
        if readable(&change.permissions) || change.old_permissions.as_ref().is_some_and(readable) {
            return true;
        }
        path::parent(&change.path)
            .and_then(|parent| self.tree.get(parent))
            .is_some_and(|parent| {
                operations::access_for(&caller, parent, &self.domains).allows(Access::READ)
            })
    }

    /// Queues the events of the pending changes; `cause` is the connection whose request
    /// made them (`None`: the store itself, e.g. a domain's death). An event that finds no
    /// memory is dropped, as one over its domain's quota is.
    pub(crate) fn flush_events(&mut self, cause: Option<ConnectionId>) {
        let changes = core::mem::take(&mut self.pending_changes);
        // (connection, message, whether a queued duplicate suppresses it)
        let mut events: Vec<(ConnectionId, Vec<u8>, bool)> = Vec::new();
        let mut dropped = 0usize;
        for change in &changes {
            self.watches
                .for_each_matching(&change.path, change.exact, |_, watch| {
                    if !self.watch_permitted(watch.connection, change) {
                        return;
                    }
                    let shown = change
                        .path
                        .get(watch.relative_prefix_bytes..)
                        .unwrap_or(&change.path);
                    match event_message(shown.as_bytes(), &watch.token) {
                        Ok(message) => {
                            if fallible::push(&mut events, (watch.connection, message, true))
                                .is_err()
                            {
                                dropped += 1;
                            }
                        }
                        Err(StoreError::OutOfMemory) => dropped += 1,
                        Err(_) => {}
                    }
                });
        }
        let specials = core::mem::take(&mut self.pending_special);
        for (name, domain) in specials {
            dropped += self.collect_special_events(name, domain, &mut events);
        }
        for (connection, message) in core::mem::take(&mut self.pending_direct_events) {
            if fallible::push(&mut events, (connection, message, false)).is_err() {
                dropped += 1;
            }
        }
        if dropped > 0 {
            log::warn!("{dropped} watch events dropped: no memory to build them");
        }
        for (connection, message, suppress_duplicates) in events {
            let duplicate = suppress_duplicates
                && self
                    .connections
                    .get(&connection)
                    .is_some_and(|state| state.has_unsent_event(&message));
            if !duplicate {
                if self.tracing() {
                    let shown = message.get(HEADER_SIZE_BYTES..).unwrap_or(&[]);
                    log::info!(target: ACCESS_LOG_TARGET, "OUT {} WATCH_EVENT ({})", connection.0, Printable(shown));
                }
                self.queue_event(connection, message, cause);
            }
        }
    }

    /// `@introduceDomain`/`@releaseDomain` events (C 4.22 `fire_special_watches()`): watches
    /// on the bare name without a depth get the bare name; watches on `name/<domid>`, and
    /// on the bare name with a depth of at least 1, get `name/<domid>`. Only connections that
    /// may read the special node are told. Returns how many events found no memory.
    fn collect_special_events(
        &self,
        name: &str,
        domain: DomainId,
        events: &mut Vec<(ConnectionId, Vec<u8>, bool)>,
    ) -> usize {
        let Some(special) = self.tree.get(name) else {
            return 0;
        };
        // `name/<domid>`: at most a special name, a slash and five digits.
        let mut per_domain_bytes = [0u8; 48];
        let per_domain = special_per_domain(name, domain, &mut per_domain_bytes);
        let mut dropped = 0;
        let mut deliver = |watch: &Watch, shown: &[u8]| {
            let permitted = self.caller(watch.connection).is_some_and(|caller| {
                operations::access_for(&caller, special, &self.domains).allows(Access::READ)
            });
            if permitted {
                let queued = event_message(shown, &watch.token)
                    .and_then(|message| fallible::push(events, (watch.connection, message, false)));
                if queued.is_err() {
                    dropped += 1;
                }
            }
        };
        for watch in self.watches.on_path(name) {
            match watch.depth {
                None => deliver(watch, name.as_bytes()),
                Some(depth) if depth >= 1 => deliver(watch, per_domain),
                Some(_) => {}
            }
        }
        let per_domain_path = core::str::from_utf8(per_domain).unwrap_or(name);
        for watch in self.watches.on_path(per_domain_path) {
            deliver(watch, per_domain);
        }
        dropped
    }

    /// Queues a watch event (a whole message); it is dropped when the connection's domain is
    /// at its memory quota, when the store's memory is low, or when it finds no memory.
    pub(crate) fn queue_event(
        &mut self,
        connection: ConnectionId,
        bytes: Vec<u8>,
        caused_by: Option<ConnectionId>,
    ) {
        let now = self.now_milliseconds;
        let Some(state) = self.healthy_connection(connection) else {
            return;
        };
        let domain = state.domain;
        let size = bytes.len() as u64;
        let privileged = domain == self.config.privileged_domain;
        // A watch event that would take an unprivileged domain over its hard memory quota
        // is dropped (C `send_event()`, XSA-326 `f6d0013364`): a guest that does not read
        // its ring cannot make the store hold unbounded events for it. Replies are bounded
        // by the outstanding-request quota instead and are always queued.
        if !privileged {
            let quotas = self.quotas_of(domain);
            let usage = self.domains.usage(domain).memory_bytes;
            if quotas.exceeded_by(QuotaKind::MemoryBytes, usage.saturating_add(size)) {
                log::debug!("domain {domain}: watch event dropped, memory quota reached");
                return;
            }
        }
        // Under the guests' memory reserve, events for guests are dropped as at their quota:
        // the memory left is the toolstack's (`memory.rs`).
        if !privileged
            && self
                .memory_status
                .is_some_and(|status| !status.admits_guest_event())
        {
            log::debug!("domain {domain}: watch event dropped, the store's memory is low");
            return;
        }
        // Every place the event takes is found before it is queued, so that an event
        // refused for want of memory leaves no trace.
        let noted = self.output_ready.try_insert(connection).is_ok()
            && (privileged || self.event_holders.try_insert(connection).is_ok());
        let queued = noted
            && self.connections.get_mut(&connection).is_some_and(|state| {
                // A slot beyond the event when it can be had: a reply after it then finds
                // its slot even if memory runs out meanwhile.
                let _ = state.reserve_output(2);
                state
                    .push_output(OutputMessage {
                        bytes,
                        is_reply: false,
                        queued_at_milliseconds: now,
                        caused_by,
                    })
                    .is_ok()
            });
        if !queued {
            log::debug!("domain {domain}: watch event dropped, no memory");
            return;
        }
        self.domains.charge_output(domain, size);
        if let Some(cause) = caused_by
            && let Some(state) = self.connections.get_mut(&cause)
        {
            state.caused_events_pending += 1;
        }
    }
}

/// `name/<domid>` written into `room` (no allocation): the path of a special event about
/// one domain.
fn special_per_domain<'a>(name: &str, domain: DomainId, room: &'a mut [u8; 48]) -> &'a [u8] {
    let mut digits = [0u8; 20];
    let digits = fallible::decimal_digits(u64::from(domain.0), &mut digits);
    let mut used = 0;
    for part in [name.as_bytes(), b"/", digits] {
        if let Some(target) = room.get_mut(used..used + part.len()) {
            target.copy_from_slice(part);
            used += part.len();
        }
    }
    room.get(..used).unwrap_or(&[])
}

/// A whole `XS_WATCH_EVENT` message for `shown_path` and `token`, in one allocation;
/// `ENOMEM` when it cannot be allocated, `E2BIG` when it exceeds a payload.
pub(crate) fn event_message(shown_path: &[u8], token: &[u8]) -> StoreResult<Vec<u8>> {
    let payload_bytes = shown_path.len() + token.len() + 2;
    if payload_bytes > PAYLOAD_MAX_BYTES {
        return Err(StoreError::TooBig);
    }
    let header = MessageHeader {
        message_type: MessageType::WatchEvent.number(),
        request_id: 0,
        transaction_id: 0,
        payload_length_bytes: u32::try_from(payload_bytes).map_err(|_| StoreError::TooBig)?,
    };
    let mut message = fallible::vec_with_capacity(HEADER_SIZE_BYTES + payload_bytes)?;
    message.extend_from_slice(&header.to_bytes());
    message.extend_from_slice(shown_path);
    message.push(0);
    message.extend_from_slice(token);
    message.push(0);
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::RELEASE_DOMAIN;
    use crate::wire;

    #[test]
    fn events_are_built_without_formatting() {
        let message = event_message(b"/a", b"token").unwrap();
        assert_eq!(
            message,
            wire::encode_message(MessageType::WatchEvent.number(), 0, 0, b"/a\0token\0")
        );
        assert_eq!(
            event_message(&[b'a'; PAYLOAD_MAX_BYTES], b""),
            Err(StoreError::TooBig)
        );
        let mut room = [0u8; 48];
        assert_eq!(
            special_per_domain(RELEASE_DOMAIN, DomainId(65535), &mut room),
            b"@releaseDomain/65535"
        );
    }
}
