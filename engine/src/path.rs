//! Node paths: validation, canonical form, relative paths and the `@` special names.
//!
//! Rules from `docs/misc/xenstore.txt` ("Paths") and C xenstored's `canonicalize()`:
//! absolute paths start with `/`, components are separated by single `/`, no trailing `/`
//! except the root, characters `A-Z a-z 0-9 - / _ @`. A path not starting with `/` or `@` is
//! relative to the caller's home `/local/domain/<domid>`. Names starting with `@` are special
//! watch names, accepted only where the request allows them.

use crate::wire::ABSOLUTE_PATH_MAX_BYTES;
use crate::{DomainId, StoreError, StoreResult};
use alloc::string::String;

/// `@introduceDomain`: fired when a domain is introduced.
pub const INTRODUCE_DOMAIN: &str = "@introduceDomain";
/// `@releaseDomain`: fired when a domain is released, dies or shuts down.
pub const RELEASE_DOMAIN: &str = "@releaseDomain";

/// A validated path in absolute form, remembering how it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanonicalPath {
    /// The absolute (or `@` special) form.
    pub absolute: String,
    /// Bytes of the home prefix (`/local/domain/<id>/`) that were added to a relative path;
    /// 0 for absolute paths. Watch events strip it again (C's `get_watch_path()`).
    pub relative_prefix_bytes: usize,
}

/// The prefix of every domain's home.
const HOME_PREFIX: &str = "/local/domain/";
/// Digits of the largest domain id (65535).
const DOMAIN_ID_DIGITS_MAX: usize = 5;

/// `/local/domain/<domid>`: a domain's home (`XS_GET_DOMAIN_PATH`); `ENOMEM` when it
/// cannot be allocated.
pub fn home_path(domain: DomainId) -> StoreResult<String> {
    let mut path = string_with_capacity(HOME_PREFIX.len() + DOMAIN_ID_DIGITS_MAX)?;
    push_home(&mut path, domain);
    Ok(path)
}

/// An empty string with room for `capacity` bytes, or `ENOMEM`.
fn string_with_capacity(capacity: usize) -> StoreResult<String> {
    let mut text = String::new();
    text.try_reserve_exact(capacity)
        .map_err(|_| StoreError::OutOfMemory)?;
    Ok(text)
}

/// Appends `/local/domain/<domid>` without `core::fmt`, which costs more than the rest of a
/// small request (it runs for every relative path). Callers reserve the room first, so the
/// pushes never allocate.
fn push_home(path: &mut String, domain: DomainId) {
    path.push_str(HOME_PREFIX);
    let mut digits = [0u8; 20];
    for digit in crate::fallible::decimal_digits(u64::from(domain.0), &mut digits) {
        path.push(char::from(*digit));
    }
}

fn valid_character(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'/' | b'_' | b'@')
}

/// Validates `raw` and turns it into its absolute form.
///
/// `home` is the caller's domain (relative paths resolve under its home); `allow_special`
/// permits `@` names (`XS_WATCH`, `XS_UNWATCH`, `XS_GET_PERMS`, `XS_SET_PERMS`).
pub fn canonicalize(raw: &[u8], home: DomainId, allow_special: bool) -> StoreResult<CanonicalPath> {
    // One pass over the bytes: the character set and no empty component (`//`).
    let mut after_slash = false;
    for byte in raw {
        let slash = *byte == b'/';
        if !valid_character(*byte) || (slash && after_slash) {
            return Err(StoreError::Invalid);
        }
        after_slash = slash;
    }
    // Only ASCII is left, so this cannot fail.
    let text = core::str::from_utf8(raw).map_err(|_| StoreError::Invalid)?;
    // No trailing `/` but for the root itself; a relative path must not end in one either.
    if text.is_empty() || (after_slash && text != "/") {
        return Err(StoreError::Invalid);
    }
    let relative = !text.starts_with('/') && !text.starts_with('@');
    if text.starts_with('@') && !allow_special {
        return Err(StoreError::Invalid);
    }
    let (absolute, relative_prefix_bytes) = if relative {
        let mut absolute =
            string_with_capacity(HOME_PREFIX.len() + DOMAIN_ID_DIGITS_MAX + 1 + text.len())?;
        push_home(&mut absolute, home);
        absolute.push('/');
        let prefix_bytes = absolute.len();
        absolute.push_str(text);
        (absolute, prefix_bytes)
    } else {
        (crate::fallible::string(text)?, 0)
    };
    if absolute.len() > ABSOLUTE_PATH_MAX_BYTES {
        return Err(StoreError::Invalid);
    }
    Ok(CanonicalPath {
        absolute,
        relative_prefix_bytes,
    })
}

/// Whether `path` is an `@` special name.
pub fn is_special(path: &str) -> bool {
    path.starts_with('@')
}

/// The parent of an absolute path (`None` for `/` and for special names).
pub fn parent(path: &str) -> Option<&str> {
    if path == "/" || is_special(path) {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(index) => path.get(..index),
        None => None,
    }
}

/// The last component of an absolute path (empty for `/`).
pub fn base_name(path: &str) -> &str {
    match path.rfind('/') {
        Some(index) => path.get(index + 1..).unwrap_or(""),
        None => path,
    }
}

/// `parent/name`, taking care of the root; `ENOMEM` when it cannot be allocated.
pub fn join(parent: &str, name: &str) -> StoreResult<String> {
    let parent = if parent == "/" { "" } else { parent };
    let mut path = string_with_capacity(parent.len() + 1 + name.len())?;
    path.push_str(parent);
    path.push('/');
    path.push_str(name);
    Ok(path)
}

/// Whether `ancestor` is `path` or one of its ancestors.
pub fn is_ancestor_or_self(ancestor: &str, path: &str) -> bool {
    if ancestor == path || ancestor == "/" && path.starts_with('/') {
        return true;
    }
    path.strip_prefix(ancestor)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// How many levels `path` lies below `ancestor` (0 when equal); `ancestor` must be an ancestor.
pub fn depth_below(ancestor: &str, path: &str) -> usize {
    if ancestor == path {
        return 0;
    }
    let rest = if ancestor == "/" {
        path.get(1..)
    } else {
        path.get(ancestor.len() + 1..)
    };
    rest.map_or(0, |rest| rest.split('/').count())
}

/// The length that the `path-max` quota limits: what follows `/local/domain/<n>/`
/// (C xenstored's `is_valid_nodename()`; `n` has at most five digits).
pub fn quota_length_bytes(path: &str) -> usize {
    const PREFIX: &str = "/local/domain/";
    if let Some(rest) = path.strip_prefix(PREFIX) {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if (1..=5).contains(&digits) && rest.as_bytes().get(digits) == Some(&b'/') {
            return rest.len() - digits - 1;
        }
    }
    path.len()
}

/// Every ancestor of `path` from the root down, then `path` itself.
pub fn ancestors_and_self(path: &str) -> impl Iterator<Item = &str> {
    let root = if path.starts_with('/') && path != "/" {
        Some("/")
    } else {
        None
    };
    let inner = path
        .match_indices('/')
        .filter(|(index, _)| *index > 0)
        .filter_map(move |(index, _)| path.get(..index));
    root.into_iter().chain(inner).chain(core::iter::once(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn absolute(raw: &str) -> StoreResult<String> {
        canonicalize(raw.as_bytes(), DomainId(3), false).map(|path| path.absolute)
    }

    #[test]
    fn relative_paths_resolve_under_the_home() {
        let path = canonicalize(b"device/vif", DomainId(3), false).unwrap();
        assert_eq!(path.absolute, "/local/domain/3/device/vif");
        assert_eq!(path.relative_prefix_bytes, "/local/domain/3/".len());
        for (domain, home) in [
            (0, "/local/domain/0"),
            (10, "/local/domain/10"),
            (32753, "/local/domain/32753"),
            (65535, "/local/domain/65535"),
        ] {
            assert_eq!(home_path(DomainId(domain)).unwrap(), home);
            let path = canonicalize(b"a/b", DomainId(domain), false).unwrap();
            assert_eq!(path.absolute, std::format!("{home}/a/b"));
        }
        for bad in ["a/", "a//b", "a/b/", "a b"] {
            assert_eq!(absolute(bad), Err(StoreError::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn bad_shapes_and_characters_are_invalid() {
        for bad in ["", "/a/", "//", "/a//b", "/a b", "/a.b", "/a\u{e9}", "@x"] {
            assert_eq!(absolute(bad), Err(StoreError::Invalid), "{bad:?}");
        }
        assert_eq!(absolute("/").unwrap(), "/");
        assert_eq!(absolute("/a-b_c@d/0").unwrap(), "/a-b_c@d/0");
        assert!(canonicalize(b"@releaseDomain", DomainId(0), true).is_ok());
        let too_long = std::format!("/{}", "a".repeat(ABSOLUTE_PATH_MAX_BYTES));
        assert_eq!(absolute(&too_long), Err(StoreError::Invalid));
    }

    #[test]
    fn parents_names_and_ancestry() {
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/"), None);
        assert_eq!(base_name("/a/b"), "b");
        assert_eq!(join("/", "a").unwrap(), "/a");
        assert_eq!(join("/a", "b").unwrap(), "/a/b");
        assert!(is_ancestor_or_self("/", "/a"));
        assert!(is_ancestor_or_self("/a", "/a/b"));
        assert!(!is_ancestor_or_self("/a", "/ab"));
        assert_eq!(depth_below("/a", "/a/b/c"), 2);
        assert_eq!(depth_below("/", "/a"), 1);
        let chain: Vec<&str> = ancestors_and_self("/a/b/c").collect();
        assert_eq!(chain, ["/", "/a", "/a/b", "/a/b/c"]);
        let root: Vec<&str> = ancestors_and_self("/").collect();
        assert_eq!(root, ["/"]);
    }

    #[test]
    fn quota_length_counts_only_the_part_after_a_domain_home() {
        assert_eq!(quota_length_bytes("/local/domain/12/data"), 4);
        assert_eq!(
            quota_length_bytes("/local/domain/123456/x"),
            "/local/domain/123456/x".len()
        );
        assert_eq!(quota_length_bytes("/tool"), 5);
    }
}
