//! A request's payload parsed once into a typed [`Request`] (`docs/protocol.md`, "Wire
//! format"): the handlers in `requests/` receive checked paths, numbers and names, never
//! payload bytes.
//!
//! Parsing follows C xenstored's argument rules (`onearg()`, `get_strings()`) and answers
//! the same errors in the same order as the handlers did when each parsed its own payload:
//! a request whose payload has several faults gets the error of the first one checked.
//! Paths are resolved here too, since a relative path is relative to the caller's home and
//! an unprivileged caller's paths must fit its `path-max` quota; that is why parsing takes
//! a [`ParseContext`]. An argument whose check needs the engine's state (whether a domain
//! exists) is checked by its handler; the only such arguments left as text are the quota
//! names of `XS_GET_QUOTA <domid> <name>` and `XS_SET_QUOTA`, which C judges after the
//! domain ([`QuotaQuery`]).

use crate::DomainId;
use crate::domain::feature;
use crate::live_update::{self, LiveUpdateStep};
use crate::operations::Caller;
use crate::path::{self, CanonicalPath};
use crate::permissions::Permissions;
use crate::quota::{QuotaKind, Quotas};
use crate::wire::{self, MessageType};
use crate::{StoreError, StoreResult};

/// One request, as its handler needs it. Paths are resolved ([`CanonicalPath`]); payload
/// bytes kept as they are (values, tokens, text) borrow from the payload.
#[derive(Debug)]
pub(crate) enum Request<'a> {
    /// `XS_READ`: a node's value.
    Read { path: CanonicalPath },
    /// `XS_DIRECTORY`: a node's children.
    Directory { path: CanonicalPath },
    /// `XS_DIRECTORY_PART`: a node's children from `offset` bytes of the list on.
    DirectoryPart { path: CanonicalPath, offset: usize },
    /// `XS_GET_PERMS`: a node's permissions.
    GetPermissions { path: CanonicalPath },
    /// `XS_WRITE`: stores `value`, creating the node and its missing ancestors.
    Write {
        path: CanonicalPath,
        value: &'a [u8],
    },
    /// `XS_MKDIR`: creates the node and its missing ancestors.
    Mkdir { path: CanonicalPath },
    /// `XS_RM`: removes the node and its descendants.
    Remove { path: CanonicalPath },
    /// `XS_SET_PERMS`: replaces a node's permissions.
    SetPermissions {
        path: CanonicalPath,
        permissions: Permissions,
    },
    /// `XS_WATCH`: `written_path` is the path as the client wrote it (the initial event
    /// carries it); `depth` limits the watch to that many levels below the path.
    Watch {
        path: CanonicalPath,
        written_path: &'a [u8],
        token: &'a [u8],
        depth: Option<u32>,
    },
    /// `XS_UNWATCH`.
    Unwatch {
        path: CanonicalPath,
        token: &'a [u8],
    },
    /// `XS_RESET_WATCHES`: drops the connection's watches and transactions.
    ResetWatches,
    /// `XS_TRANSACTION_START` (its payload is ignored, as in C).
    TransactionStart,
    /// `XS_TRANSACTION_END`: `commit` (`T`) or abort (`F`).
    TransactionEnd { commit: bool },
    /// `XS_INTRODUCE`: `ring_frame` is the frame the toolstack passed (ignored by the
    /// platforms in favour of the grant reference), `remote_port` the guest's port.
    Introduce {
        domain: DomainId,
        ring_frame: u64,
        remote_port: u32,
    },
    /// `XS_RELEASE`.
    Release { domain: DomainId },
    /// `XS_RESUME`: `@releaseDomain` may fire again for the domain.
    Resume { domain: DomainId },
    /// `XS_IS_DOMAIN_INTRODUCED`.
    IsDomainIntroduced { domain: DomainId },
    /// `XS_GET_DOMAIN_PATH`.
    GetDomainPath { domain: DomainId },
    /// `XS_SET_TARGET`: `domain` acts as `target` for permission checks.
    SetTarget { domain: DomainId, target: DomainId },
    /// `XS_GET_FEATURE`: the caller's features, or (privileged only) a domain's.
    GetFeature { domain: Option<DomainId> },
    /// `XS_SET_FEATURE`: the features a domain not yet introduced will have.
    SetFeature { domain: DomainId, features: u32 },
    /// `XS_GET_QUOTA`.
    GetQuota(QuotaQuery<'a>),
    /// `XS_SET_QUOTA`: the global value when `domain` is `None`. The name and the value are
    /// judged after the domain is found, as C does (`ENOENT` before `EINVAL`).
    SetQuota {
        domain: Option<DomainId>,
        name: &'a [u8],
        value: u32,
    },
    /// `XS_CONTROL`.
    Control(ControlCommand<'a>),
}

/// What `XS_GET_QUOTA` asks for.
#[derive(Debug)]
pub(crate) enum QuotaQuery<'a> {
    /// The names of the quotas in force.
    Names,
    /// The global value of the quota `kind`.
    Global { kind: QuotaKind },
    /// A domain's value of the quota named `name`. The name is judged after the domain is
    /// found (`ENOENT` before `EINVAL`, and a domain that exists gets its record either way).
    Domain { domain: DomainId, name: &'a [u8] },
}

/// An `XS_CONTROL` command, as `xenstore-control` sends them (C xenstored's commands).
#[derive(Debug)]
pub(crate) enum ControlCommand<'a> {
    /// `help`.
    Help,
    /// `log`: whether the access trace is on.
    LogStatus,
    /// `log on|off`.
    SetLog { enabled: bool },
    /// `logfile <file>`: accepted, nothing to do (the trace goes to the front end's logger).
    LogFile,
    /// `print <string>`: written to the access trace.
    Print { text: &'a [u8] },
    /// `check`: the accounting recounted and repaired.
    Check,
    /// `memreport [<file>]`.
    MemoryReport,
    /// `quota`: the global quotas.
    QuotaList,
    /// `quota set <name> <value>`.
    QuotaSet { kind: QuotaKind, value: u32 },
    /// `quota max [-r]`: the largest usage seen, reset afterwards with `-r`.
    QuotaMax { reset: bool },
    /// `quota <domid>`: a domain's usage and quotas.
    QuotaOfDomain { domain: DomainId },
    /// `quota-soft`.
    SoftQuotaList,
    /// `quota-soft set memory <value>`.
    SoftMemoryQuotaSet { value: u32 },
    /// `live-update <step>` (`live_update.rs`).
    LiveUpdate(LiveUpdateStep<'a>),
}

/// What parsing needs to know about the caller.
pub(crate) struct ParseContext {
    /// Relative paths resolve under its home; its features decide which arguments exist;
    /// only the privileged domain may name another domain in `XS_GET_FEATURE`.
    pub caller: Caller,
    /// Its quotas (`path-max` limits an unprivileged caller's paths).
    pub quotas: Quotas,
}

impl ParseContext {
    /// `raw` as an absolute path (`EINVAL` when invalid or over the caller's `path-max`).
    fn resolve(&self, raw: &[u8], allow_special: bool) -> StoreResult<CanonicalPath> {
        let canonical = path::canonicalize(raw, self.caller.domain, allow_special)?;
        if !self.caller.privileged {
            let length = path::quota_length_bytes(&canonical.absolute) as u64;
            if self.quotas.exceeded_by(QuotaKind::PathMaxBytes, length) {
                return Err(StoreError::Invalid);
            }
        }
        Ok(canonical)
    }
}

/// Whether only the privileged domain may send requests of this type (`EACCES` for others,
/// before their payload is looked at).
pub(crate) fn is_privileged_only(message_type: MessageType) -> bool {
    use MessageType::*;
    matches!(
        message_type,
        Control
            | Introduce
            | Release
            | IsDomainIntroduced
            | Resume
            | SetTarget
            | SetFeature
            | GetQuota
            | SetQuota
    )
}

impl<'a> Request<'a> {
    /// Parses a request of `message_type` from `payload`: `EINVAL` when malformed, `ENOMEM`
    /// when its argument list or a path cannot be allocated, `ENOSYS` for the types that are
    /// not requests (`XS_WATCH_EVENT`, `XS_ERROR`).
    pub(crate) fn parse(
        message_type: MessageType,
        payload: &'a [u8],
        context: &ParseContext,
    ) -> StoreResult<Request<'a>> {
        use MessageType as Type;
        // The path of the requests whose one argument is a path.
        let one_path = |allow_special| context.resolve(one_argument(payload)?, allow_special);
        Ok(match message_type {
            Type::Read => Request::Read {
                path: one_path(false)?,
            },
            Type::Directory => Request::Directory {
                path: one_path(false)?,
            },
            Type::GetPermissions => Request::GetPermissions {
                path: one_path(true)?,
            },
            Type::DirectoryPart => parse_directory_part(payload, context)?,
            Type::Write => parse_write(payload, context)?,
            Type::Mkdir => Request::Mkdir {
                path: one_path(false)?,
            },
            Type::Remove => Request::Remove {
                path: one_path(false)?,
            },
            Type::SetPermissions => parse_set_permissions(payload, context)?,
            Type::Watch => parse_watch(payload, context)?,
            Type::Unwatch => parse_unwatch(payload, context)?,
            Type::ResetWatches => Request::ResetWatches,
            Type::TransactionStart => Request::TransactionStart,
            Type::TransactionEnd => Request::TransactionEnd {
                commit: match wire::single_string(payload) {
                    Some(b"T") => true,
                    Some(b"F") => false,
                    _ => return Err(StoreError::Invalid),
                },
            },
            Type::Introduce => parse_introduce(payload)?,
            Type::Release => Request::Release {
                domain: one_domain_argument(payload)?,
            },
            Type::Resume => Request::Resume {
                domain: one_domain_argument(payload)?,
            },
            Type::IsDomainIntroduced => Request::IsDomainIntroduced {
                domain: one_domain_argument(payload)?,
            },
            Type::GetDomainPath => Request::GetDomainPath {
                domain: one_domain_argument(payload)?,
            },
            Type::SetTarget => parse_set_target(payload)?,
            Type::GetFeature => parse_get_feature(payload, context)?,
            Type::SetFeature => parse_set_feature(payload)?,
            Type::GetQuota => Request::GetQuota(parse_get_quota(payload)?),
            Type::SetQuota => parse_set_quota(payload)?,
            Type::Control => Request::Control(parse_control(payload)?),
            Type::WatchEvent | Type::Error => return Err(StoreError::NotImplemented),
        })
    }
}

/// The argument of a one-argument request (`EINVAL` unless the payload is `arg\0`).
fn one_argument(payload: &[u8]) -> StoreResult<&[u8]> {
    wire::single_string(payload).ok_or(StoreError::Invalid)
}

/// A domain id argument: decimal, below 65536.
fn domain_argument(text: &[u8]) -> StoreResult<DomainId> {
    let number = wire::parse_decimal(text).ok_or(StoreError::Invalid)?;
    u16::try_from(number)
        .map(DomainId)
        .map_err(|_| StoreError::Invalid)
}

fn one_domain_argument(payload: &[u8]) -> StoreResult<DomainId> {
    domain_argument(one_argument(payload)?)
}

/// Where C's `strtoul()` and `atoi()` start reading digits: past leading white space
/// (`isspace()`) and an optional sign; whether the sign was `-`, and the rest of `text`.
fn c_number_start(text: &[u8]) -> (bool, &[u8]) {
    let mut rest = text;
    while let Some((first, tail)) = rest.split_first()
        && matches!(first, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
    {
        rest = tail;
    }
    let negative = rest.first() == Some(&b'-');
    if matches!(rest.first(), Some(b'-' | b'+')) {
        rest = rest.get(1..).unwrap_or(&[]);
    }
    (negative, rest)
}

/// C xenstored's `parse_domid()`, used by the requests of Xen 4.21 and 4.22: `strtoul()` in
/// base 10 (leading white space and a sign allowed; the empty text is 0) must take the
/// whole text and give at most 65535, else `EINVAL`.
fn c_domain_argument(text: &[u8]) -> StoreResult<DomainId> {
    let (negative, rest) = c_number_start(text);
    if rest.is_empty() {
        // No digits: `strtoul()` consumed nothing, which is the whole text only if empty.
        return if text.is_empty() {
            Ok(DomainId(0))
        } else {
            Err(StoreError::Invalid)
        };
    }
    let mut value: u64 = 0;
    for byte in rest {
        let digit = byte.checked_sub(b'0').filter(|digit| *digit <= 9);
        let Some(digit) = digit else {
            return Err(StoreError::Invalid);
        };
        // Past 65535 the answer is EINVAL whatever follows (an overflow too).
        value = value.saturating_mul(10).saturating_add(u64::from(digit));
    }
    if negative && value != 0 {
        // `strtoul()` negates in unsigned arithmetic: far above 65535.
        return Err(StoreError::Invalid);
    }
    u16::try_from(value)
        .map(DomainId)
        .map_err(|_| StoreError::Invalid)
}

/// A decimal argument that fits 32 bits and that `valid` accepts; `EINVAL` otherwise.
fn u32_argument(text: &[u8], valid: impl FnOnce(u32) -> bool) -> StoreResult<u32> {
    wire::parse_decimal(text)
        .and_then(|value| u32::try_from(value).ok())
        .filter(|value| valid(*value))
        .ok_or(StoreError::Invalid)
}

/// Exactly two arguments: `<first>\0<second>\0`.
fn two_arguments(payload: &[u8]) -> StoreResult<(&[u8], &[u8])> {
    match wire::split_strings(payload)?.as_slice() {
        [first, second] => Ok((first, second)),
        _ => Err(StoreError::Invalid),
    }
}

fn utf8(bytes: &[u8]) -> StoreResult<&str> {
    core::str::from_utf8(bytes).map_err(|_| StoreError::Invalid)
}

/// A quota kind named by an argument.
fn quota_kind(name: &[u8]) -> StoreResult<QuotaKind> {
    QuotaKind::from_name(utf8(name)?)
}

/// C's `(unsigned int)atoi(text)`: leading white space, a sign, then digits up to the first
/// non-digit (none: 0); out of range as glibc's `strtol()` clamps it, then cut to 32 bits.
pub fn c_atoi_unsigned(text: &[u8]) -> u32 {
    let (negative, rest) = c_number_start(text);
    let mut value: i64 = 0;
    for digit in rest.iter().take_while(|byte| byte.is_ascii_digit()) {
        let digit = i64::from(digit - b'0');
        value = match value.checked_mul(10).and_then(|tens| {
            if negative {
                tens.checked_sub(digit)
            } else {
                tens.checked_add(digit)
            }
        }) {
            Some(next) => next,
            None if negative => i64::MIN,
            None => i64::MAX,
        };
        if value == i64::MIN || value == i64::MAX {
            break;
        }
    }
    // `int` from `long` keeps the low 32 bits; `unsigned int` from `int` reinterprets them.
    u32::try_from(value & 0xFFFF_FFFF).unwrap_or(0)
}

/// `<path>\0<offset>`.
fn parse_directory_part<'a>(payload: &'a [u8], context: &ParseContext) -> StoreResult<Request<'a>> {
    let (raw, offset) = two_arguments(payload)?;
    // C 4.22 reads the offset with `atoi()` into an unsigned int: text that is not a number
    // is offset 0, a negative one is past every list (docs/protocol.md, "Requests").
    let offset = usize::try_from(c_atoi_unsigned(offset)).unwrap_or(usize::MAX);
    let path = context.resolve(raw, false)?;
    Ok(Request::DirectoryPart { path, offset })
}

/// `<path>\0<value>`: the value is every byte after the first NUL (NULs included).
fn parse_write<'a>(payload: &'a [u8], context: &ParseContext) -> StoreResult<Request<'a>> {
    let split = payload
        .iter()
        .position(|byte| *byte == 0)
        .ok_or(StoreError::Invalid)?;
    let raw = payload.get(..split).unwrap_or(&[]);
    let value = payload.get(split + 1..).unwrap_or(&[]);
    let path = context.resolve(raw, false)?;
    Ok(Request::Write { path, value })
}

/// `<path>\0<permission>\0...`: the path is resolved before the entries are parsed.
fn parse_set_permissions<'a>(
    payload: &'a [u8],
    context: &ParseContext,
) -> StoreResult<Request<'a>> {
    let strings = wire::split_strings(payload)?;
    let (raw, entries) = strings.split_first().ok_or(StoreError::Invalid)?;
    let path = context.resolve(raw, true)?;
    let permissions = Permissions::parse(entries)?;
    Ok(Request::SetPermissions { path, permissions })
}

/// `<path>\0<token>\0` and, with the watch-depth feature, `<depth>\0` after them.
fn parse_watch<'a>(payload: &'a [u8], context: &ParseContext) -> StoreResult<Request<'a>> {
    let strings = wire::split_strings(payload)?;
    let (written_path, token, depth) = match strings.as_slice() {
        [raw, token] => (*raw, *token, None),
        [raw, token, depth] => {
            if context.caller.features & feature::WATCH_DEPTH == 0 {
                return Err(StoreError::Invalid);
            }
            let depth = u32_argument(depth, |_| true)?;
            (*raw, *token, Some(depth))
        }
        _ => return Err(StoreError::Invalid),
    };
    let path = context.resolve(written_path, true)?;
    Ok(Request::Watch {
        path,
        written_path,
        token,
        depth,
    })
}

/// `<path>\0<token>\0`.
fn parse_unwatch<'a>(payload: &'a [u8], context: &ParseContext) -> StoreResult<Request<'a>> {
    let (raw, token) = two_arguments(payload)?;
    let path = context.resolve(raw, true)?;
    Ok(Request::Unwatch { path, token })
}

/// `<domid>\0<frame>\0<port>\0`; further strings are ignored, as in C.
fn parse_introduce(payload: &[u8]) -> StoreResult<Request<'_>> {
    let strings = wire::split_strings(payload)?;
    let (Some(domain), Some(frame), Some(port)) = (strings.first(), strings.get(1), strings.get(2))
    else {
        return Err(StoreError::Invalid);
    };
    let domain = domain_argument(domain)?;
    if domain.0 >= DomainId::FIRST_RESERVED {
        return Err(StoreError::Invalid);
    }
    // The frame is "signed decimal" and ignored in favour of grant reference 1, as in C.
    let frame_text = frame.strip_prefix(b"-").unwrap_or(frame);
    let ring_frame = wire::parse_decimal(frame_text).ok_or(StoreError::Invalid)?;
    let remote_port = u32_argument(port, |port| port > 0)?;
    Ok(Request::Introduce {
        domain,
        ring_frame,
        remote_port,
    })
}

/// `<domid>\0<target domid>\0`.
fn parse_set_target(payload: &[u8]) -> StoreResult<Request<'_>> {
    let (domain, target) = two_arguments(payload)?;
    Ok(Request::SetTarget {
        domain: domain_argument(domain)?,
        target: domain_argument(target)?,
    })
}

/// Nothing (the caller's features) or `<domid>\0`, which only the privileged domain may
/// name: another caller gets `EACCES` whatever the arguments say (C 4.22 checks the caller
/// before it counts them).
fn parse_get_feature<'a>(payload: &'a [u8], context: &ParseContext) -> StoreResult<Request<'a>> {
    let strings = wire::terminated_strings(payload)?;
    let domain = match strings.as_slice() {
        [] => None,
        _ if !context.caller.privileged => return Err(StoreError::AccessDenied),
        [domain] => Some(c_domain_argument(domain)?),
        _ => return Err(StoreError::Invalid),
    };
    Ok(Request::GetFeature { domain })
}

/// `<domid>\0<features>\0`. The features are read as C's `atoi()` reads them and judged by
/// the handler, after the domain (C: `ENOENT`, then `EBUSY`, then `EINVAL`).
fn parse_set_feature(payload: &[u8]) -> StoreResult<Request<'_>> {
    let strings = wire::terminated_strings(payload)?;
    let [domain, features] = strings.as_slice() else {
        return Err(StoreError::Invalid);
    };
    Ok(Request::SetFeature {
        domain: c_domain_argument(domain)?,
        features: c_atoi_unsigned(features),
    })
}

/// Nothing, `<name>\0` or `<domid>\0<name>\0`.
fn parse_get_quota(payload: &[u8]) -> StoreResult<QuotaQuery<'_>> {
    let strings = wire::terminated_strings(payload)?;
    Ok(match strings.as_slice() {
        [] => QuotaQuery::Names,
        [name] => QuotaQuery::Global {
            kind: QuotaKind::from_wire_name(name)?,
        },
        [domain, name] => QuotaQuery::Domain {
            domain: c_domain_argument(domain)?,
            name,
        },
        _ => return Err(StoreError::Invalid),
    })
}

/// `[<domid>\0]<name>\0<value>\0`: the value read as C's `atoi()` reads it; the name and
/// the value are judged by the handler, after the domain.
fn parse_set_quota(payload: &[u8]) -> StoreResult<Request<'_>> {
    let strings = wire::terminated_strings(payload)?;
    let (domain, name, value) = match strings.as_slice() {
        [name, value] => (None, *name, *value),
        [domain, name, value] => (Some(c_domain_argument(domain)?), *name, *value),
        _ => return Err(StoreError::Invalid),
    };
    Ok(Request::SetQuota {
        domain,
        name,
        value: c_atoi_unsigned(value),
    })
}

/// `<command>\0<argument>\0...`.
fn parse_control(payload: &[u8]) -> StoreResult<ControlCommand<'_>> {
    // Its `-d` step carries binary data, which is not split into strings.
    if payload.starts_with(b"live-update\0") {
        return live_update::parse_step(payload).map(ControlCommand::LiveUpdate);
    }
    let strings = wire::split_strings(payload)?;
    let (command, arguments) = strings.split_first().ok_or(StoreError::Invalid)?;
    Ok(match (*command, arguments) {
        (b"help", []) => ControlCommand::Help,
        (b"log", []) => ControlCommand::LogStatus,
        (b"log", [b"on"]) => ControlCommand::SetLog { enabled: true },
        (b"log", [b"off"]) => ControlCommand::SetLog { enabled: false },
        (b"logfile", [_]) => ControlCommand::LogFile,
        (b"print", [text]) => ControlCommand::Print { text },
        (b"check", []) => ControlCommand::Check,
        (b"memreport", [] | [_]) => ControlCommand::MemoryReport,
        (b"quota", arguments) => parse_control_quota(arguments)?,
        (b"quota-soft", []) => ControlCommand::SoftQuotaList,
        (b"quota-soft", [b"set", name, value]) => {
            let value = positive(value)?;
            // Only `memory` has a soft limit.
            if utf8(name)? != "memory" {
                return Err(StoreError::Invalid);
            }
            ControlCommand::SoftMemoryQuotaSet { value }
        }
        _ => return Err(StoreError::Invalid),
    })
}

/// The arguments of `quota`.
fn parse_control_quota<'a>(arguments: &[&'a [u8]]) -> StoreResult<ControlCommand<'a>> {
    Ok(match arguments {
        [] => ControlCommand::QuotaList,
        [b"set", name, value] => {
            let value = positive(value)?;
            let kind = quota_kind(name)?;
            // The soft limit is set with `quota-soft`.
            if kind == QuotaKind::SoftMemoryBytes {
                return Err(StoreError::Invalid);
            }
            ControlCommand::QuotaSet { kind, value }
        }
        [b"max"] => ControlCommand::QuotaMax { reset: false },
        [b"max", b"-r"] => ControlCommand::QuotaMax { reset: true },
        [domain] => ControlCommand::QuotaOfDomain {
            domain: domain_argument(domain)?,
        },
        _ => return Err(StoreError::Invalid),
    })
}

/// A quota value for `xenstore-control`: at least 1.
fn positive(value: &[u8]) -> StoreResult<u32> {
    u32_argument(value, |value| value >= 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    fn context(privileged: bool) -> ParseContext {
        ParseContext {
            caller: Caller {
                domain: DomainId(if privileged { 0 } else { 3 }),
                target: None,
                privileged,
                features: feature::SUPPORTED,
            },
            quotas: Quotas::default(),
        }
    }

    /// `text` with each `|` a NUL.
    fn nul(text: &str) -> alloc::vec::Vec<u8> {
        text.bytes()
            .map(|byte| if byte == b'|' { 0 } else { byte })
            .collect()
    }

    fn parse(message_type: MessageType, payload: &[u8]) -> StoreResult<Request<'_>> {
        Request::parse(message_type, payload, &context(false))
    }

    /// `text` (`|` for NUL) as the payload of `message_type` is refused with `EINVAL`.
    #[track_caller]
    fn assert_invalid(message_type: MessageType, text: &str) {
        assert_eq!(
            parse(message_type, &nul(text)).err(),
            Some(StoreError::Invalid),
            "{message_type:?} {text:?}"
        );
    }

    #[test]
    fn paths_resolve_under_the_callers_home() {
        let payload = nul("a/b|v|w");
        let Ok(Request::Write { path, value }) = parse(MessageType::Write, &payload) else {
            panic!("a write");
        };
        assert_eq!(path.absolute, "/local/domain/3/a/b");
        assert_eq!(value, b"v\0w");
        assert_invalid(MessageType::Read, "@releaseDomain|");
        assert!(matches!(
            parse(MessageType::GetPermissions, &nul("@releaseDomain|")),
            Ok(Request::GetPermissions { .. })
        ));
    }

    #[test]
    fn arguments_are_checked_in_the_order_c_checks_them() {
        // An unprivileged caller naming a domain is refused before the domain is read.
        assert_eq!(
            parse(MessageType::GetFeature, &nul("bogus|")).err(),
            Some(StoreError::AccessDenied)
        );
        assert!(matches!(
            Request::parse(MessageType::GetFeature, &nul("7|"), &context(true)),
            Ok(Request::GetFeature {
                domain: Some(DomainId(7))
            })
        ));
        // The quota name of a domain's quota is left to the handler.
        assert!(matches!(
            parse(MessageType::GetQuota, &nul("7|bogus|")),
            Ok(Request::GetQuota(QuotaQuery::Domain { name: b"bogus", .. }))
        ));
        assert_invalid(MessageType::GetQuota, "bogus|");
    }

    #[test]
    fn domain_and_number_arguments_are_decimal_and_in_range() {
        assert!(matches!(
            parse(MessageType::Introduce, &nul("5|-12|9|extra|")),
            Ok(Request::Introduce {
                domain: DomainId(5),
                ring_frame: 12,
                remote_port: 9
            })
        ));
        for bad in ["5|12|0|", "32752|1|1|", "5|1|"] {
            assert_invalid(MessageType::Introduce, bad);
        }
        assert_invalid(MessageType::Release, "65536|");
        // The requests of 4.21 and 4.22 read a domain id as C's `parse_domid()` does ...
        for (text, domain) in [
            ("|", 0),
            (" +7|", 7),
            ("-0|", 0),
            ("007|", 7),
            ("65535|", 65535),
        ] {
            assert!(
                matches!(
                    parse(MessageType::SetFeature, &nul(&format!("{text}2|"))),
                    Ok(Request::SetFeature { domain: found, features: 2 }) if found.0 == domain
                ),
                "{text:?}"
            );
        }
        for text in [
            "5x|",
            "65536|",
            "-1|",
            " |",
            "+|",
            "99999999999999999999999|",
        ] {
            assert_invalid(MessageType::SetFeature, &format!("{text}2|"));
        }
        // ... and numbers as `atoi()` does: judged by the handler, after the domain.
        assert!(matches!(
            parse(MessageType::SetFeature, &nul("5|16x|")),
            Ok(Request::SetFeature { features: 16, .. })
        ));
        assert!(matches!(
            parse(MessageType::SetQuota, &nul("nodes|-1|")),
            Ok(Request::SetQuota {
                value: u32::MAX,
                ..
            })
        ));
        // Bytes after the last NUL are no argument.
        assert!(matches!(
            parse(MessageType::GetQuota, b"nodes"),
            Ok(Request::GetQuota(QuotaQuery::Names))
        ));
    }

    #[test]
    fn control_commands_parse_into_their_arguments() {
        assert!(matches!(
            parse(MessageType::Control, &nul("quota|set|nodes|5|")),
            Ok(Request::Control(ControlCommand::QuotaSet {
                kind: QuotaKind::Nodes,
                value: 5
            }))
        ));
        assert!(matches!(
            parse(MessageType::Control, &nul("quota|max|-r|")),
            Ok(Request::Control(ControlCommand::QuotaMax { reset: true }))
        ));
        for bad in [
            "quota|set|soft-memory|5|",
            "quota-soft|set|nodes|5|",
            "quota|set|nodes|0|",
            "log|maybe|",
            "",
        ] {
            assert_invalid(MessageType::Control, bad);
        }
    }
}
