//! Node permissions: the owner-plus-ACL lists of `docs/misc/xenstore.txt` ("Permissions").
//!
//! A list holds at least one entry. Entry 0 names the owner and gives the default access
//! of every domain not listed; later entries grant their access to one domain (or, with
//! `DOMID_ANY`, to every domain). Text form: one of `n r w b` followed by the domid.

use crate::{DomainId, StoreError, StoreResult};
use alloc::boxed::Box;
use alloc::vec::Vec;

/// Access bits (`XS_PERM_READ`, `XS_PERM_WRITE` in `xenstore_lib.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Access(u8);

impl Access {
    /// `n`: no access.
    pub const NONE: Access = Access(0);
    /// `r`: read.
    pub const READ: Access = Access(1);
    /// `w`: write.
    pub const WRITE: Access = Access(2);
    /// `b`: read and write.
    pub const BOTH: Access = Access(3);

    /// Whether every bit of `wanted` is granted.
    pub fn allows(self, wanted: Access) -> bool {
        self.0 & wanted.0 == wanted.0
    }

    /// The letter of `SET_PERMS` (and of the migration stream).
    pub(crate) fn letter(self) -> u8 {
        match self.0 {
            1 => b'r',
            2 => b'w',
            3 => b'b',
            _ => b'n',
        }
    }

    /// The access a letter names.
    pub(crate) fn from_letter(letter: u8) -> Option<Access> {
        match letter {
            b'n' => Some(Access::NONE),
            b'r' => Some(Access::READ),
            b'w' => Some(Access::WRITE),
            b'b' => Some(Access::BOTH),
            _ => None,
        }
    }
}

/// One entry of a permission list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permission {
    /// The domain the entry names.
    pub domain: DomainId,
    /// What it grants.
    pub access: Access,
    /// Set when the named domain did not exist when the entry was written, or when the
    /// writer could not use `DOMID_ANY`: the entry is kept and listed but never matches
    /// (C xenstored's `XS_PERM_IGNORE`).
    pub ignored: bool,
}

/// A node's permission list (never empty).
///
/// Most nodes carry one entry (the owner), so that case is stored inline: a list costs
/// 16 bytes in the node and allocates only when it has more than one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permissions {
    entries: EntryList,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum EntryList {
    One(Permission),
    Many(Box<[Permission]>),
}

impl Permissions {
    /// `[n<owner>]`: owned by `owner`, nobody else has access.
    pub fn owned_by(owner: DomainId) -> Permissions {
        Permissions {
            entries: EntryList::One(Permission {
                domain: owner,
                access: Access::NONE,
                ignored: false,
            }),
        }
    }

    /// Builds a list from its entries; `Ok(None)` when empty, `ENOMEM` when the list must be
    /// copied to fit its length exactly and that copy cannot be allocated (boxing a `Vec`
    /// with spare room reallocates, and would abort on failure).
    pub fn from_entries(entries: Vec<Permission>) -> StoreResult<Option<Permissions>> {
        if let [only] = entries.as_slice() {
            return Ok(Some(Permissions {
                entries: EntryList::One(*only),
            }));
        }
        if entries.is_empty() {
            return Ok(None);
        }
        let boxed = if entries.len() == entries.capacity() {
            entries.into_boxed_slice()
        } else {
            crate::fallible::copy_slice(&entries)?.into_boxed_slice()
        };
        Ok(Some(Permissions {
            entries: EntryList::Many(boxed),
        }))
    }

    /// The entries, owner first.
    pub fn entries(&self) -> &[Permission] {
        match &self.entries {
            EntryList::One(entry) => core::slice::from_ref(entry),
            EntryList::Many(entries) => entries,
        }
    }

    /// Mutable entries (to flag entries of dead domains).
    pub fn entries_mut(&mut self) -> &mut [Permission] {
        match &mut self.entries {
            EntryList::One(entry) => core::slice::from_mut(entry),
            EntryList::Many(entries) => entries,
        }
    }

    /// A copy; `ENOMEM` when a list of several entries cannot be allocated.
    pub fn try_clone(&self) -> StoreResult<Permissions> {
        Ok(Permissions {
            entries: match &self.entries {
                EntryList::One(entry) => EntryList::One(*entry),
                EntryList::Many(entries) => {
                    EntryList::Many(crate::fallible::copy_slice(entries)?.into_boxed_slice())
                }
            },
        })
    }

    /// Appends an entry; `ENOMEM` (and the list unchanged) when it cannot grow.
    pub fn push(&mut self, entry: Permission) -> StoreResult<()> {
        let mut entries = crate::fallible::vec_with_capacity(self.entries().len() + 1)?;
        entries.extend_from_slice(self.entries());
        entries.push(entry);
        self.entries = EntryList::Many(entries.into_boxed_slice());
        Ok(())
    }

    /// The list of the entries `keep` accepts, in order; `Ok(None)` when none is left,
    /// `ENOMEM` when the list cannot be allocated.
    pub fn retained(
        &self,
        keep: impl FnMut(&&Permission) -> bool,
    ) -> StoreResult<Option<Permissions>> {
        let mut entries = crate::fallible::vec_with_capacity(self.entries().len())?;
        entries.extend(self.entries().iter().filter(keep).copied());
        Permissions::from_entries(entries)
    }

    /// The owner (entry 0).
    pub fn owner(&self) -> DomainId {
        self.entries()
            .first()
            .map_or(DomainId(0), |entry| entry.domain)
    }

    /// Replaces the owner, keeping the default access.
    pub fn set_owner(&mut self, owner: DomainId) {
        if let Some(entry) = self.entries_mut().first_mut() {
            entry.domain = owner;
            entry.ignored = false;
        }
    }

    /// Parses the strings of an `XS_SET_PERMS` request (after the path).
    ///
    /// The domid is parsed like C's `strtol(..., 0)`: decimal, `0x` hex or `0` octal.
    pub fn parse(strings: &[&[u8]]) -> StoreResult<Permissions> {
        let mut entries = crate::fallible::vec_with_capacity(strings.len())?;
        for text in strings {
            let (letter, number) = text.split_first().ok_or(StoreError::Invalid)?;
            let access = Access::from_letter(*letter).ok_or(StoreError::Invalid)?;
            let domain = parse_c_integer(number).ok_or(StoreError::Invalid)?;
            let domain = u16::try_from(domain).map_err(|_| StoreError::Invalid)?;
            entries.push(Permission {
                domain: DomainId(domain),
                access,
                ignored: false,
            });
        }
        Permissions::from_entries(entries)?.ok_or(StoreError::Invalid)
    }

    /// The `XS_GET_PERMS` reply: every entry as `<letter><domid>\0` (ignored ones included);
    /// `ENOMEM` when it cannot be allocated.
    pub fn to_wire(&self) -> StoreResult<Vec<u8>> {
        // A letter, at most five digits and a NUL per entry.
        let mut bytes = crate::fallible::vec_with_capacity(self.entries().len() * 7)?;
        for entry in self.entries() {
            bytes.push(entry.access.letter());
            bytes.extend_from_slice(crate::fallible::decimal_digits(
                u64::from(entry.domain.0),
                &mut [0; 20],
            ));
            bytes.push(0);
        }
        Ok(bytes)
    }

    /// The bytes C xenstored charges for the list in a node record (8 per entry).
    pub fn stored_size_bytes(&self) -> usize {
        self.entries().len() * 8
    }
}

/// `strtol(text, &end, 0)` with `*end == 0` required: no sign, no spaces.
fn parse_c_integer(text: &[u8]) -> Option<u64> {
    let (digits, radix) = if let Some(hex) = text.strip_prefix(b"0x").or(text.strip_prefix(b"0X")) {
        (hex, 16)
    } else if text.len() > 1 && text.first() == Some(&b'0') {
        (text.get(1..)?, 8)
    } else {
        (text, 10)
    };
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    let mut value: u64 = 0;
    for byte in digits {
        let digit = char::from(*byte).to_digit(radix)?;
        value = value
            .checked_mul(u64::from(radix))?
            .checked_add(u64::from(digit))?;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_entries() {
        let permissions = Permissions::parse(&[b"n0", b"r5", b"b0x10", b"w010"]).unwrap();
        assert_eq!(permissions.owner(), DomainId(0));
        assert_eq!(permissions.entries()[2].domain, DomainId(16));
        assert_eq!(permissions.entries()[3].domain, DomainId(8));
        assert_eq!(permissions.to_wire().unwrap(), b"n0\0r5\0b16\0w8\0");
    }

    #[test]
    fn rejects_bad_entries() {
        for bad in [&b"x0"[..], b"r", b"r-1", b"r 1", b"r1a", b"r70000"] {
            assert_eq!(
                Permissions::parse(&[bad]),
                Err(StoreError::Invalid),
                "{bad:?}"
            );
        }
        assert_eq!(Permissions::parse(&[]), Err(StoreError::Invalid));
    }

    #[test]
    fn lists_with_spare_room_are_copied_to_their_length() {
        let entry = |domain| Permission {
            domain: DomainId(domain),
            access: Access::READ,
            ignored: false,
        };
        let mut entries = Vec::with_capacity(8);
        entries.extend([entry(1), entry(2)]);
        let permissions = Permissions::from_entries(entries).unwrap().unwrap();
        assert_eq!(permissions.entries(), [entry(1), entry(2)]);
        assert_eq!(Permissions::from_entries(Vec::new()), Ok(None));
    }

    #[test]
    fn access_bits() {
        assert!(Access::BOTH.allows(Access::READ));
        assert!(Access::READ.allows(Access::NONE));
        assert!(!Access::READ.allows(Access::WRITE));
    }
}
