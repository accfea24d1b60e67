//! An engine driven with raw wire messages, for the migration-stream tests: bytes in, every queued byte out.

use std::vec::Vec;
use xenstore_engine::testing::NullPlatform;
use xenstore_engine::{ConnectionId, Engine};

/// `|` stands for NUL.
pub fn payload(text: &str) -> Vec<u8> {
    text.bytes()
        .map(|byte| if byte == b'|' { 0 } else { byte })
        .collect()
}

/// An engine on the null platform, driven with raw messages; each test file adds its own
/// ways of sending requests.
pub struct Store {
    pub engine: Engine,
    pub platform: NullPlatform,
    pub next_request_id: u32,
}

impl Store {
    /// The store over `engine`, its request ids counted from `first_request_id`.
    pub fn new(engine: Engine, first_request_id: u32) -> Store {
        Store {
            engine,
            platform: NullPlatform::default(),
            next_request_id: first_request_id,
        }
    }

    /// Feeds raw bytes; all must be taken.
    pub fn feed(&mut self, connection: ConnectionId, bytes: &[u8]) {
        let taken = self.engine.receive(&mut self.platform, connection, bytes);
        assert_eq!(taken, bytes.len(), "the engine took every byte");
    }

    /// Everything queued for the connection, consumed.
    pub fn take_output(&mut self, connection: ConnectionId) -> Vec<u8> {
        let mut bytes = Vec::new();
        loop {
            let output = self.engine.output(connection).to_vec();
            if output.is_empty() {
                return bytes;
            }
            self.engine.consume_output(connection, output.len());
            bytes.extend(output);
        }
    }
}
