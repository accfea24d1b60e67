//! Which error a request with several faults gets: the first fault checked, in the order the
//! checks have always run (privilege and transaction before the payload, the payload's
//! arguments in order, the engine's state after them). Parsing a payload into a typed
//! request (`engine/src/request.rs`) must keep this order; these transcripts pin it.

mod support;

use support::Harness;
use xenstore_engine::DomainId;

#[test]
fn privilege_and_transaction_are_checked_before_the_payload() {
    let mut h = Harness::new();
    let dom0 = h.dom0;
    let guest = h.introduce(5);
    // Privileged-only requests: `EACCES` whatever the payload says.
    for (request, payload) in [
        ("INTRODUCE", "garbage"),
        ("RELEASE", ""),
        ("SET_QUOTA", "bogus|x|"),
        ("CONTROL", ""),
        ("SET_TARGET", "1|"),
    ] {
        assert_eq!(h.request(guest, request, 0, payload), "ERROR EACCES");
    }
    h.expect(
        guest,
        &[
            // A guest naming a domain in GET_FEATURE: refused before the domain is read,
            // and before the arguments are counted (C 4.22).
            ("GET_FEATURE", 0, "bogus|", "ERROR EACCES"),
            ("GET_FEATURE", 0, "1|2|", "ERROR EACCES"),
        ],
    );
    h.expect(
        dom0,
        &[
            // An unknown transaction before a malformed payload; ending "transaction 0" is
            // ENOENT once the argument was found good (C 4.22 checks `T`/`F` first).
            ("READ", 77, "//bad", "ERROR ENOENT"),
            ("TRANSACTION_END", 0, "X|", "ERROR EINVAL"),
            ("TRANSACTION_END", 0, "T|", "ERROR ENOENT"),
        ],
    );
    let transaction: u32 = h
        .request(dom0, "TRANSACTION_START", 0, "")
        .trim_end_matches('|')
        .parse()
        .unwrap();
    h.expect(
        dom0,
        &[
            ("TRANSACTION_START", transaction, "anything", "ERROR EBUSY"),
            ("TRANSACTION_END", transaction, "X|", "ERROR EINVAL"),
            // Watches ignore the transaction id.
            ("WATCH", 77, "/w|token|", "OK|"),
        ],
    );
}

#[test]
fn arguments_are_judged_before_the_store_and_quota_names_after_the_domain() {
    let mut h = Harness::new();
    let dom0 = h.dom0;
    // The quota name of GET_QUOTA <domid> <name> is judged once the domain is found.
    h.platform.dead.insert(DomainId(40));
    h.expect(
        dom0,
        &[
            ("GET_QUOTA", 0, "40|bogus|", "ERROR ENOENT"),
            ("GET_QUOTA", 0, "41|bogus|", "ERROR EINVAL"),
            ("GET_QUOTA", 0, "x|nodes|", "ERROR EINVAL"),
            // SET_QUOTA and SET_FEATURE read the domain id first, then look for the domain,
            // then judge the name, the value or the features (C 4.22).
            ("SET_QUOTA", 0, "x|bogus|1|", "ERROR EINVAL"),
            ("SET_QUOTA", 0, "40|bogus|1|", "ERROR ENOENT"),
            ("SET_QUOTA", 0, "40|nodes|1|", "ERROR ENOENT"),
            ("SET_QUOTA", 0, "41|bogus|1|", "ERROR EINVAL"),
            ("SET_FEATURE", 0, "x|99|", "ERROR EINVAL"),
            ("SET_FEATURE", 0, "40|99|", "ERROR ENOENT"),
            ("SET_FEATURE", 0, "40|2|", "ERROR ENOENT"),
            ("SET_FEATURE", 0, "41|99|", "ERROR EINVAL"),
            // A malformed path before anything about the node; a missing node after that.
            ("SET_PERMS", 0, "//bad|q1|", "ERROR EINVAL"),
            ("SET_PERMS", 0, "/missing|q1|", "ERROR EINVAL"),
            ("SET_PERMS", 0, "/missing|n0|", "ERROR ENOENT"),
            ("DIRECTORY_PART", 0, "/missing|x|", "ERROR ENOENT"),
            ("DIRECTORY_PART", 0, "/missing|0|", "ERROR ENOENT"),
        ],
    );
    // Introduction: every argument is checked before the platform is asked.
    h.platform.refuse_connect = true;
    assert_eq!(h.request(dom0, "INTRODUCE", 0, "7|1|0|"), "ERROR EINVAL");
    assert_eq!(h.request(dom0, "INTRODUCE", 0, "7|1|3|"), "ERROR EIO");
}
