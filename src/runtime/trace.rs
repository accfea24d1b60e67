//! A fixed-size ring of recent trace events, dumped by the panic handler.
//!
//! Modelled on Hubris' `ringbuf`: entries are small `Copy` records (a static label and one
//! number), so recording never allocates and is safe from any context.

use heapless::HistoryBuf;
use spin::Mutex;

/// How many recent events are kept.
pub const TRACE_CAPACITY: usize = 32;

/// One recorded event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceEntry {
    /// Counts every event since boot, so gaps show how many were overwritten.
    pub sequence: u64,
    /// What happened (a static label such as `"evtchn.send"`).
    pub event: &'static str,
    /// One event-specific number (a port, an address, an error number…).
    pub value: u64,
}

/// A trace ring; the kernel uses the global [`record`]/[`for_each_recent`].
pub struct TraceRing {
    entries: HistoryBuf<TraceEntry, TRACE_CAPACITY>,
    next_sequence: u64,
}

impl TraceRing {
    pub const fn new() -> TraceRing {
        TraceRing {
            entries: HistoryBuf::new(),
            next_sequence: 0,
        }
    }

    /// Appends an event, overwriting the oldest when full.
    pub fn record(&mut self, event: &'static str, value: u64) {
        let sequence = self.next_sequence;
        self.next_sequence = self.next_sequence.wrapping_add(1);
        self.entries.write(TraceEntry {
            sequence,
            event,
            value,
        });
    }

    /// Visits the kept events, oldest first.
    pub fn for_each(&self, mut visit: impl FnMut(&TraceEntry)) {
        for entry in self.entries.oldest_ordered() {
            visit(entry);
        }
    }
}

impl Default for TraceRing {
    fn default() -> Self {
        Self::new()
    }
}

static TRACE_RING: Mutex<TraceRing> = Mutex::new(TraceRing::new());

/// Records an event in the global ring (dropped silently if the ring is busy, e.g. when a
/// panic interrupted a recording).
pub fn record(event: &'static str, value: u64) {
    if let Some(mut ring) = TRACE_RING.try_lock() {
        ring.record(event, value);
    }
}

/// Visits the global ring's events, oldest first; does nothing if the ring is busy.
pub fn for_each_recent(visit: impl FnMut(&TraceEntry)) {
    if let Some(ring) = TRACE_RING.try_lock() {
        ring.for_each(visit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn keeps_the_most_recent_entries_in_order() {
        let mut ring = TraceRing::new();
        for value in 0..(TRACE_CAPACITY as u64 + 5) {
            ring.record("tick", value);
        }
        let mut seen = Vec::new();
        ring.for_each(|entry| seen.push((entry.sequence, entry.value)));
        assert_eq!(seen.len(), TRACE_CAPACITY);
        assert_eq!(seen.first(), Some(&(5, 5)));
        assert_eq!(
            seen.last(),
            Some(&(TRACE_CAPACITY as u64 + 4, TRACE_CAPACITY as u64 + 4))
        );
    }

    #[test]
    fn empty_ring_visits_nothing() {
        let ring = TraceRing::new();
        let mut count = 0;
        ring.for_each(|_| count += 1);
        assert_eq!(count, 0);
    }

    #[test]
    fn global_ring_records() {
        record("test.global", 7);
        let mut found = false;
        for_each_recent(|entry| found |= entry.event == "test.global" && entry.value == 7);
        assert!(found);
    }
}
