//! The xenstore shared-ring protocol (`docs/misc/xenstore-ring.txt`) as pure logic over a 4 KiB page.
//!
//! (Placeholder: being written.)
