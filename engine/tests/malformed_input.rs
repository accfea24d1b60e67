//! Random and malformed requests from several domains: the engine answers every one with a
//! well-formed reply, never panics, keeps its accounting exact and keeps serving dom0.

mod support;

use support::Harness;
use xenstore_engine::DomainId;
use xenstore_engine::wire::{HEADER_SIZE_BYTES, MessageHeader, MessageType, encode_message};

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, limit: u64) -> u64 {
        self.next() % limit.max(1)
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const PIECES: &[&str] = &[
    "/",
    "/local",
    "/local/domain/31",
    "/local/domain/32/x",
    "a",
    "a/b",
    "@releaseDomain",
    "@introduceDomain",
    "/tool/xenstored",
    "//",
    "/a/",
    "",
    "0",
    "1",
    "T",
    "F",
    "n0",
    "r31",
    "b32",
    "w0x7ff5",
    "help",
    "quota",
    "nodes",
    "4294967295",
    "-1",
    "99999999999999999999",
    "tok",
    "/ümlaut",
    "32",
    "31",
    "check",
];

fn random_payload(random: &mut Random) -> Vec<u8> {
    let mut payload = Vec::new();
    for _ in 0..random.below(5) {
        match random.below(6) {
            0 => payload.extend((0..random.below(40)).map(|_| random.next() as u8)),
            1 => payload.extend(std::iter::repeat_n(b'a', random.below(4000) as usize)),
            _ => payload.extend_from_slice(random.pick(PIECES).as_bytes()),
        }
        if random.below(4) != 0 {
            payload.push(0);
        }
    }
    payload.truncate(4096);
    payload
}

#[test]
fn random_requests_never_break_the_engine() {
    let mut h = Harness::new();
    for domain in [31u16, 32] {
        assert_eq!(
            h.request(h.dom0, "MKDIR", 0, &format!("/local/domain/{domain}|")),
            "OK|"
        );
        assert_eq!(
            h.request(
                h.dom0,
                "SET_PERMS",
                0,
                &format!("/local/domain/{domain}|n{domain}|")
            ),
            "OK|"
        );
    }
    let guests = [h.introduce(31), h.introduce(32)];
    let mut random = Random(0x5eed_1234_abcd_0001);
    for round in 0..20_000u32 {
        let connection = if random.below(5) == 0 {
            h.dom0
        } else {
            guests[random.below(2) as usize]
        };
        if h.engine.failure(connection).is_some() {
            continue;
        }
        let message_type = random.below(30) as u32;
        let transaction_id = if random.below(4) == 0 {
            random.below(4) as u32
        } else {
            0
        };
        let payload = random_payload(&mut random);
        if message_type == MessageType::Introduce.number()
            || message_type == MessageType::Release.number()
        {
            continue; // lifecycle is exercised elsewhere; keep both guests connected here
        }
        let message = encode_message(message_type, round, transaction_id, &payload);
        h.platform.now_milliseconds += 1;
        let taken = h.engine.receive(&mut h.platform, connection, &message);
        assert!(taken <= message.len());
        // Drain and check that output is a sequence of whole, well-formed messages.
        let output = h.take_output(connection);
        let mut rest = output.as_slice();
        while !rest.is_empty() {
            assert!(
                rest.len() >= HEADER_SIZE_BYTES,
                "round {round}: partial header"
            );
            let header = MessageHeader::from_bytes(rest[..HEADER_SIZE_BYTES].try_into().unwrap());
            assert!(
                header.payload_length_bytes <= 4096,
                "round {round}: oversized reply"
            );
            let end = HEADER_SIZE_BYTES + header.payload_length_bytes as usize;
            assert!(rest.len() >= end, "round {round}: partial payload");
            rest = &rest[end..];
        }
        h.engine.tick(&mut h.platform);
        for guest in guests {
            let pending = h.engine.output(guest).len();
            h.engine.consume_output(guest, pending);
        }
    }
    assert_eq!(h.engine.check_accounting(), 0, "usage equals a recount");
    assert_eq!(h.request(h.dom0, "WRITE", 0, "/alive|yes"), "OK|");
    assert_eq!(h.request(h.dom0, "READ", 0, "/alive|"), "yes");
    h.engine.domain_died(&mut h.platform, DomainId(31));
    assert_eq!(h.engine.check_accounting(), 0);
}

#[test]
fn garbage_byte_streams_fail_only_their_own_connection() {
    let mut h = Harness::new();
    let guest = h.introduce(33);
    let mut random = Random(42);
    let garbage: Vec<u8> = (0..10_000).map(|_| random.next() as u8).collect();
    let taken = h.engine.receive(&mut h.platform, guest, &garbage);
    assert!(taken <= garbage.len());
    assert_eq!(h.request(h.dom0, "READ", 0, "/tool/xenstored|"), "");
}
