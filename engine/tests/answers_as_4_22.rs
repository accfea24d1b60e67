//! Answers where this store once differed from C xenstored 4.22 (`tools/xenstored` of
//! RELEASE-4.22.0), replayed as transcripts (issue 18, "Answers exactly as 4.22").

mod support;

use support::Harness;
use xenstore_engine::{ConnectionId, DomainId};

#[test]
fn transaction_end_checks_its_argument_before_the_transaction() {
    let mut h = Harness::new();
    let dom0 = h.dom0;
    // No transaction (id 0): a bad argument is EINVAL, a good one ENOENT.
    assert_eq!(h.request(dom0, "TRANSACTION_END", 0, "X|"), "ERROR EINVAL");
    assert_eq!(h.request(dom0, "TRANSACTION_END", 0, "|"), "ERROR EINVAL");
    assert_eq!(h.request(dom0, "TRANSACTION_END", 0, "T|"), "ERROR ENOENT");
    assert_eq!(h.request(dom0, "TRANSACTION_END", 0, "F|"), "ERROR ENOENT");
    // An unknown transaction id is ENOENT whatever the argument (it is looked up first).
    assert_eq!(h.request(dom0, "TRANSACTION_END", 99, "X|"), "ERROR ENOENT");
}

#[test]
fn directory_part_reads_its_offset_as_atoi_does() {
    let mut h = Harness::new();
    let dom0 = h.dom0;
    for child in ["a", "b", "c"] {
        assert_eq!(
            h.request(dom0, "WRITE", 0, &format!("/dir/{child}|")),
            "OK|"
        );
    }
    let whole = h.request(dom0, "DIRECTORY_PART", 0, "/dir|0|");
    let generation = whole.split('|').next().unwrap().to_string();
    assert_eq!(whole, format!("{generation}|a|b|c||"));
    // The offset is in bytes of the children list ("a\0b\0c\0"). Not a number: offset 0.
    // Digits then text: the digits. White space and a sign before them are skipped.
    assert_eq!(h.request(dom0, "DIRECTORY_PART", 0, "/dir|abc|"), whole);
    assert_eq!(h.request(dom0, "DIRECTORY_PART", 0, "/dir||"), whole);
    assert_eq!(
        h.request(dom0, "DIRECTORY_PART", 0, "/dir|2x|"),
        format!("{generation}|b|c||")
    );
    assert_eq!(
        h.request(dom0, "DIRECTORY_PART", 0, "/dir| +4|"),
        format!("{generation}|c||")
    );
    // Negative: a huge unsigned offset, past the list: the generation and an empty string.
    assert_eq!(
        h.request(dom0, "DIRECTORY_PART", 0, "/dir|-1|"),
        format!("{generation}||")
    );
    assert_eq!(
        h.request(dom0, "DIRECTORY_PART", 0, "/dir|99999999999999999999|"),
        format!("{generation}||")
    );
}

#[test]
fn the_privileged_domain_is_introduced_without_a_ring() {
    // The harness's dom0 speaks through a socket, as the Linux daemon's does; C xenstored in
    // dom0 introduces dom0 at its start.
    let mut h = Harness::new();
    let dom0 = h.dom0;
    assert_eq!(h.request(dom0, "IS_DOMAIN_INTRODUCED", 0, "0|"), "T|");
    assert_eq!(h.request(dom0, "IS_DOMAIN_INTRODUCED", 0, "3|"), "F|");
    assert_eq!(h.request(dom0, "RELEASE", 0, "0|"), "ERROR EINVAL");
    assert_eq!(h.request(dom0, "IS_DOMAIN_INTRODUCED", 0, "0|"), "T|");
}

// The requests of Xen 4.21 and 4.22 in every form libxenstore, libxl and xl send them
// (docs/protocol.md, "Features and quotas"), with their exact replies: the reply's type,
// then its payload bytes.

const GET_FEATURE: u32 = 23;
const SET_FEATURE: u32 = 24;
const GET_QUOTA: u32 = 25;
const SET_QUOTA: u32 = 26;
const ERROR: u32 = 16;

/// Sends `request` (`|` stands for NUL) and checks the reply's type and bytes: `reply` is
/// the payload of a reply of the request's own type, or of an `ERROR` when it is an error
/// name (`EINVAL|`).
fn exchange(
    h: &mut Harness,
    connection: ConnectionId,
    message_type: u32,
    request: &str,
    reply: &str,
) {
    let bytes = |text: &str| -> Vec<u8> {
        text.bytes()
            .map(|byte| if byte == b'|' { 0 } else { byte })
            .collect()
    };
    let is_error = reply.starts_with('E')
        && reply.strip_suffix('|').is_some_and(|name| {
            name.bytes()
                .all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit())
        });
    let answer = h.request_bytes(connection, message_type, 0, &bytes(request));
    assert_eq!(
        (answer.message_type, answer.payload),
        (if is_error { ERROR } else { message_type }, bytes(reply)),
        "type {message_type} request {request:?}"
    );
}

#[test]
fn get_feature_of_the_caller_and_of_a_domain() {
    let mut h = Harness::new();
    let dom0 = h.dom0;
    // `xs_get_features_supported()` (`xl info -x`, libxl before SET_FEATURE): no payload;
    // the caller's features, ERROR | WATCH_DEPTH | DOMID_ANY.
    exchange(&mut h, dom0, GET_FEATURE, "", "14|");
    // `xs_get_features_domain()`: a domain that exists gets its record, with every feature.
    exchange(&mut h, dom0, GET_FEATURE, "7|", "14|");
    // A domain that does not exist, or a reserved id: ENOENT.
    h.platform.dead.insert(DomainId(40));
    exchange(&mut h, dom0, GET_FEATURE, "40|", "ENOENT|");
    exchange(&mut h, dom0, GET_FEATURE, "32752|", "ENOENT|");
    // The domain id as C's `parse_domid()` reads it: whole text, at most 65535.
    exchange(&mut h, dom0, GET_FEATURE, "7x|", "EINVAL|");
    exchange(&mut h, dom0, GET_FEATURE, "65536|", "EINVAL|");
    exchange(&mut h, dom0, GET_FEATURE, "-1|", "EINVAL|");
    exchange(&mut h, dom0, GET_FEATURE, " 7|", "14|");
    exchange(&mut h, dom0, GET_FEATURE, "7|8|", "EINVAL|");
    // Bytes after the last NUL are not an argument.
    exchange(&mut h, dom0, GET_FEATURE, "7", "14|");
    // A guest: its own features; naming a domain is EACCES, whatever follows.
    let guest = h.introduce(5);
    exchange(&mut h, guest, GET_FEATURE, "", "14|");
    exchange(&mut h, guest, GET_FEATURE, "5|", "EACCES|");
    exchange(&mut h, guest, GET_FEATURE, "x|", "EACCES|");
    exchange(&mut h, guest, GET_FEATURE, "5|6|", "EACCES|");
}

#[test]
fn set_feature_as_libxl_masks_a_new_domain() {
    let mut h = Harness::new();
    let dom0 = h.dom0;
    // `xl create` with `xenstore_feature_mask=0x2`: the supported features (14) and the
    // mask, before XS_INTRODUCE.
    exchange(&mut h, dom0, SET_FEATURE, "7|2|", "OK|");
    exchange(&mut h, dom0, GET_FEATURE, "7|", "2|");
    // Without its NUL the domain id is no argument: the caller's own features.
    exchange(&mut h, dom0, GET_FEATURE, "7", "14|");
    // Read as `atoi()` reads it.
    exchange(&mut h, dom0, SET_FEATURE, "7|8 and more|", "OK|");
    exchange(&mut h, dom0, GET_FEATURE, "7|", "8|");
    exchange(&mut h, dom0, SET_FEATURE, "7|none|", "OK|");
    exchange(&mut h, dom0, GET_FEATURE, "7|", "0|");
    exchange(&mut h, dom0, SET_FEATURE, "7|2|", "OK|");
    // A feature this server lacks (reconnection), or any other bit: EINVAL.
    exchange(&mut h, dom0, SET_FEATURE, "7|1|", "EINVAL|");
    exchange(&mut h, dom0, SET_FEATURE, "7|-1|", "EINVAL|");
    // Argument count and domain id first, then the domain, then introduction, then bits.
    exchange(&mut h, dom0, SET_FEATURE, "7|", "EINVAL|");
    exchange(&mut h, dom0, SET_FEATURE, "7|2|2|", "EINVAL|");
    exchange(&mut h, dom0, SET_FEATURE, "7|2", "EINVAL|");
    exchange(&mut h, dom0, SET_FEATURE, "x|2|", "EINVAL|");
    h.platform.dead.insert(DomainId(40));
    exchange(&mut h, dom0, SET_FEATURE, "40|16|", "ENOENT|");
    let guest = h.introduce(7);
    exchange(&mut h, dom0, SET_FEATURE, "7|16|", "EBUSY|");
    exchange(&mut h, dom0, SET_FEATURE, "7|14|", "EBUSY|");
    // The guest has the masked set.
    exchange(&mut h, guest, GET_FEATURE, "", "2|");
    exchange(&mut h, guest, SET_FEATURE, "7|2|", "EACCES|");
}

#[test]
fn get_quota_names_and_values() {
    let mut h = Harness::new();
    let dom0 = h.dom0;
    // `xs_get_quota_names()` (`xl xenstore-quota-get`, libxl's domain configuration): every
    // quota, C's order, separated by spaces.
    let names = "nodes watches outstanding memory soft-memory transactions \
        transaction-nodes node-permissions path-max node-size|";
    exchange(&mut h, dom0, GET_QUOTA, "", names);
    // `xs_get_global_quota()`.
    for (name, value) in [
        ("nodes", "1000"),
        ("watches", "128"),
        ("outstanding", "20"),
        ("memory", "2621440"),
        ("soft-memory", "2097152"),
        ("transactions", "10"),
        ("transaction-nodes", "1024"),
        ("node-permissions", "5"),
        ("path-max", "2048"),
        ("node-size", "2048"),
    ] {
        exchange(
            &mut h,
            dom0,
            GET_QUOTA,
            &format!("{name}|"),
            &format!("{value}|"),
        );
    }
    // Names C does not have (4.17's `permissions` included): EINVAL.
    for name in ["permissions", "soft-nodes", "bogus", ""] {
        exchange(&mut h, dom0, GET_QUOTA, &format!("{name}|"), "EINVAL|");
    }
    // A limit of 0 (none) is still listed.
    exchange(&mut h, dom0, SET_QUOTA, "watches|0|", "OK|");
    exchange(&mut h, dom0, GET_QUOTA, "", names);
    exchange(&mut h, dom0, GET_QUOTA, "watches|", "0|");
    // `xs_get_domain_quota()`: the domain's own copy, made from the global values.
    exchange(&mut h, dom0, GET_QUOTA, "7|nodes|", "1000|");
    exchange(&mut h, dom0, GET_QUOTA, "7|soft-memory|", "2097152|");
    exchange(&mut h, dom0, GET_QUOTA, "7|permissions|", "EINVAL|");
    // The domain before the name: ENOENT for a domain that does not exist.
    h.platform.dead.insert(DomainId(40));
    exchange(&mut h, dom0, GET_QUOTA, "40|nodes|", "ENOENT|");
    exchange(&mut h, dom0, GET_QUOTA, "40|bogus|", "ENOENT|");
    exchange(&mut h, dom0, GET_QUOTA, "x|nodes|", "EINVAL|");
    exchange(&mut h, dom0, GET_QUOTA, "7|nodes|x|", "EINVAL|");
    // Privileged only, whatever the payload.
    let guest = h.introduce(5);
    exchange(&mut h, guest, GET_QUOTA, "", "EACCES|");
    exchange(&mut h, guest, GET_QUOTA, "nodes|", "EACCES|");
    exchange(&mut h, guest, GET_QUOTA, "5|nodes|", "EACCES|");
}

#[test]
fn set_quota_global_and_per_domain() {
    let mut h = Harness::new();
    let dom0 = h.dom0;
    exchange(&mut h, dom0, GET_QUOTA, "7|nodes|", "1000|");
    // `xs_set_global_quota()` (`xl xenstore-quota-set -g nodes=2000`).
    exchange(&mut h, dom0, SET_QUOTA, "nodes|2000|", "OK|");
    exchange(&mut h, dom0, GET_QUOTA, "nodes|", "2000|");
    // A domain's copy was made before: it keeps its value; a new domain gets the new one.
    exchange(&mut h, dom0, GET_QUOTA, "7|nodes|", "1000|");
    exchange(&mut h, dom0, GET_QUOTA, "8|nodes|", "2000|");
    // `xs_set_domain_quota()` (`xl create` with `xenstore_quota=["nodes=30"]`, after
    // XS_INTRODUCE; `xl xenstore-quota-set 7 nodes=30`): the global value stays.
    exchange(&mut h, dom0, SET_QUOTA, "7|nodes|30|", "OK|");
    exchange(&mut h, dom0, GET_QUOTA, "7|nodes|", "30|");
    exchange(&mut h, dom0, GET_QUOTA, "nodes|", "2000|");
    exchange(&mut h, dom0, SET_QUOTA, "7|soft-memory|1000|", "OK|");
    exchange(&mut h, dom0, GET_QUOTA, "7|soft-memory|", "1000|");
    // The value is read as `atoi()` reads it: text is 0 (no limit), digits stop at the
    // first other byte; -1 and 4294967295 are C's "disabled": EINVAL.
    exchange(&mut h, dom0, SET_QUOTA, "watches|none|", "OK|");
    exchange(&mut h, dom0, GET_QUOTA, "watches|", "0|");
    exchange(&mut h, dom0, SET_QUOTA, "watches|64k|", "OK|");
    exchange(&mut h, dom0, GET_QUOTA, "watches|", "64|");
    exchange(&mut h, dom0, SET_QUOTA, "watches|-2|", "OK|");
    exchange(&mut h, dom0, GET_QUOTA, "watches|", "4294967294|");
    exchange(&mut h, dom0, SET_QUOTA, "watches|-1|", "EINVAL|");
    exchange(&mut h, dom0, SET_QUOTA, "watches|4294967295|", "EINVAL|");
    exchange(&mut h, dom0, SET_QUOTA, "7|watches|-1|", "EINVAL|");
    // Unknown names, argument counts, domain ids; the domain before the name and value.
    exchange(&mut h, dom0, SET_QUOTA, "permissions|3|", "EINVAL|");
    exchange(&mut h, dom0, SET_QUOTA, "soft-nodes|3|", "EINVAL|");
    exchange(&mut h, dom0, SET_QUOTA, "nodes|", "EINVAL|");
    exchange(&mut h, dom0, SET_QUOTA, "7|nodes|3|x|", "EINVAL|");
    exchange(&mut h, dom0, SET_QUOTA, "x|nodes|3|", "EINVAL|");
    h.platform.dead.insert(DomainId(40));
    exchange(&mut h, dom0, SET_QUOTA, "40|nodes|3|", "ENOENT|");
    exchange(&mut h, dom0, SET_QUOTA, "40|bogus|-1|", "ENOENT|");
    // Privileged only.
    let guest = h.introduce(5);
    exchange(&mut h, guest, SET_QUOTA, "nodes|5|", "EACCES|");
    exchange(&mut h, guest, SET_QUOTA, "5|nodes|5|", "EACCES|");
    exchange(&mut h, guest, SET_QUOTA, "", "EACCES|");
}

#[test]
fn a_domain_quota_set_by_libxl_limits_the_guest() {
    let mut h = Harness::new();
    let dom0 = h.dom0;
    let guest = h.introduce(7);
    exchange(&mut h, dom0, SET_QUOTA, "7|nodes|3|", "OK|");
    assert_eq!(h.request(dom0, "MKDIR", 0, "/local/domain/7|"), "OK|");
    assert_eq!(
        h.request(dom0, "SET_PERMS", 0, "/local/domain/7|n7|"),
        "OK|"
    );
    // The home counts: 3 is reached by the third node.
    assert_eq!(h.request(guest, "WRITE", 0, "a|"), "OK|");
    assert_eq!(h.request(guest, "WRITE", 0, "b|"), "ERROR ENOSPC");
}
