//! Answers where this store once differed from C xenstored 4.22 (`tools/xenstored` of
//! RELEASE-4.22.0), replayed as transcripts (issue 18, "Answers exactly as 4.22").

mod support;

use support::Harness;

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
