//! Fuzz target: the migration-stream reader (`Engine::from_state`, docs/migration-stream.md)
//! on arbitrary bytes. It must never panic; a stream it accepts must give a store whose
//! accounting recount finds nothing wrong, and that store, written and read again, must give
//! the same stream (nothing is lost or invented between the reader and the writer).
#![no_main]

use xenstore_engine::migration::NoFrontEndState;
use xenstore_engine::{Config, Engine};

libfuzzer_sys::fuzz_target!(|stream: &[u8]| {
    let Ok((mut engine, _)) = Engine::from_state(Config::default(), stream) else {
        return;
    };
    assert_eq!(engine.check_accounting(), 0, "the restored books balance");
    let written = engine
        .write_state(&NoFrontEndState)
        .expect("a restored store can be written");
    let (again, _) =
        Engine::from_state(Config::default(), &written).expect("our own stream reads back");
    let rewritten = again
        .write_state(&NoFrontEndState)
        .expect("a restored store can be written");
    assert_eq!(written, rewritten, "writing is stable across a round trip");
});
