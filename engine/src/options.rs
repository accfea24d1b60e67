//! C xenstored's command-line options that shape the store, shared by both front ends.
//!
//! The Linux daemon takes them on its command line; the stub domain receives them on its
//! kernel command line through `init-xenstore-domain --param` (`XENSTORE_DOMAIN_ARGS`).
//! Names and meanings follow C xenstored's `usage()` (4.17 and 4.22); parsing is
//! getopt_long-like: `-E 100`, `-E100`, `--entry-nb 100`, `--entry-nb=100`, flag clusters.

use crate::quota::QuotaKind;
use crate::{Config, DomainId};

/// C clamps `-M` to `XENSTORE_REL_PATH_MAX`.
const PATH_MAX_LIMIT_BYTES: u32 = 2048;

/// A command-line option: its short letter (`'\0'` for none) and long name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionName {
    /// `-x` form, or `'\0'`.
    pub short: char,
    /// `--name` form.
    pub long: &'static str,
}

/// An option's names (`'\0'`: no short form).
pub const fn option(short: char, long: &'static str) -> OptionName {
    OptionName { short, long }
}

/// Store options that take a value.
pub const STORE_OPTIONS_WITH_VALUE: [OptionName; 10] = [
    option('E', "entry-nb"),
    option('S', "entry-size"),
    option('W', "watch-nb"),
    option('t', "transaction"),
    option('A', "perm-nb"),
    option('M', "path-max"),
    option('Q', "quota"),
    option('q', "quota-soft"),
    option('w', "timeout"),
    option('\0', "priv-domid"),
];

/// Store options without a value.
pub const STORE_FLAGS: [OptionName; 1] = [option('K', "keep-orphans")];

/// C xenstored's options about the process rather than the store, with a value: every front
/// end accepts them (the toolstack passes them to whichever xenstore it starts) and decides
/// what they mean there.
pub const PROCESS_OPTIONS_WITH_VALUE: [OptionName; 3] = [
    option('T', "trace-file"),
    option('\0', "master-domid"),
    option('F', "pid-file"),
];

/// C xenstored's process options without a value (see [`PROCESS_OPTIONS_WITH_VALUE`]).
pub const PROCESS_FLAGS: [OptionName; 3] = [
    option('N', "no-fork"),
    option('I', "internal-db"),
    option('D', "no-domain-init"),
];

/// Why an argument was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionError<'a> {
    /// Not an option this program knows.
    Unknown(&'a str),
    /// The option needs a value and none followed.
    MissingValue(&'static str),
    /// A flag was given a value (`--flag=x`).
    UnexpectedValue(&'static str),
    /// The value is not acceptable.
    BadValue {
        /// The option's long name.
        option: &'static str,
        /// What was given.
        value: &'a str,
    },
    /// A plain argument where an option was expected.
    NotAnOption(&'a str),
}

impl core::fmt::Display for OptionError<'_> {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            OptionError::Unknown(argument) => write!(formatter, "unrecognized option '{argument}'"),
            OptionError::MissingValue(option) => {
                write!(formatter, "option --{option} requires an argument")
            }
            OptionError::UnexpectedValue(option) => {
                write!(formatter, "option --{option} takes no argument")
            }
            OptionError::BadValue { option, value } => {
                write!(formatter, "option --{option}: '{value}' is not acceptable")
            }
            OptionError::NotAnOption(argument) => {
                write!(formatter, "unexpected argument '{argument}'")
            }
        }
    }
}

/// Splits `arguments` into options getopt_long-style and calls `handle(long_name, value)`
/// for each, in order. `with_value` and `flags` list every option the caller accepts.
pub fn for_each_option<'a, E>(
    arguments: impl IntoIterator<Item = &'a str>,
    with_value: &[OptionName],
    flags: &[OptionName],
    mut handle: impl FnMut(&'static str, Option<&'a str>) -> Result<(), E>,
) -> Result<(), E>
where
    E: From<OptionError<'a>>,
{
    let mut arguments = arguments.into_iter();
    while let Some(argument) = arguments.next() {
        if let Some(long) = argument.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (long, None),
            };
            if let Some(known) = with_value.iter().find(|known| known.long == name) {
                let value = inline
                    .or_else(|| arguments.next())
                    .ok_or(OptionError::MissingValue(known.long))?;
                handle(known.long, Some(value))?;
            } else if let Some(known) = flags.iter().find(|known| known.long == name) {
                if inline.is_some() {
                    return Err(OptionError::UnexpectedValue(known.long).into());
                }
                handle(known.long, None)?;
            } else {
                return Err(OptionError::Unknown(argument).into());
            }
        } else if let Some(cluster) = argument.strip_prefix('-').filter(|rest| !rest.is_empty()) {
            for (position, letter) in cluster.char_indices() {
                if let Some(known) = with_value
                    .iter()
                    .find(|known| known.short == letter && letter != '\0')
                {
                    let rest = cluster.get(position + letter.len_utf8()..).unwrap_or("");
                    let value = if rest.is_empty() {
                        arguments
                            .next()
                            .ok_or(OptionError::MissingValue(known.long))?
                    } else {
                        rest
                    };
                    handle(known.long, Some(value))?;
                    break;
                } else if let Some(known) = flags
                    .iter()
                    .find(|known| known.short == letter && letter != '\0')
                {
                    handle(known.long, None)?;
                } else {
                    return Err(OptionError::Unknown(argument).into());
                }
            }
        } else {
            return Err(OptionError::NotAnOption(argument).into());
        }
    }
    Ok(())
}

fn number<'a>(option: &'static str, value: &'a str) -> Result<u32, OptionError<'a>> {
    value
        .parse::<u32>()
        .map_err(|_| OptionError::BadValue { option, value })
}

fn assignment<'a>(option: &'static str, value: &'a str) -> Result<(&'a str, u32), OptionError<'a>> {
    let (name, amount) = value
        .split_once('=')
        .ok_or(OptionError::BadValue { option, value })?;
    Ok((name, number(option, amount)?))
}

/// Parses a domain id option value (a real domain, below `DOMID_FIRST_RESERVED`).
pub fn domain_value<'a>(option: &'static str, value: &'a str) -> Result<DomainId, OptionError<'a>> {
    u16::try_from(number(option, value)?)
        .ok()
        .filter(|domid| *domid < DomainId::FIRST_RESERVED)
        .map(DomainId)
        .ok_or(OptionError::BadValue { option, value })
}

/// Applies one store option (by long name) to `config`. Returns `Ok(false)` when `name` is
/// not a store option, so the caller can handle its own.
pub fn apply_store_option<'a>(
    config: &mut Config,
    name: &'static str,
    value: Option<&'a str>,
) -> Result<bool, OptionError<'a>> {
    let text = value.unwrap_or("");
    let quotas = &mut config.quotas;
    match name {
        "keep-orphans" => config.keep_orphans = true,
        "entry-nb" => quotas.set(QuotaKind::Nodes, number(name, text)?),
        "entry-size" => quotas.set(QuotaKind::NodeSizeBytes, number(name, text)?),
        "watch-nb" => quotas.set(QuotaKind::Watches, number(name, text)?),
        "transaction" => quotas.set(QuotaKind::Transactions, number(name, text)?),
        "perm-nb" => quotas.set(QuotaKind::NodePermissions, number(name, text)?),
        "path-max" => quotas.set(
            QuotaKind::PathMaxBytes,
            number(name, text)?.min(PATH_MAX_LIMIT_BYTES),
        ),
        "quota" => {
            let (what, amount) = assignment(name, text)?;
            // `soft-<name>` is accepted here too, as XS_SET_QUOTA names soft quotas.
            let result = match what.strip_prefix("soft-") {
                Some(base) => quotas.set_soft_by_name(base, amount),
                None => quotas.set_by_name(what, amount),
            };
            result.map_err(|_| OptionError::BadValue {
                option: name,
                value: text,
            })?;
        }
        "quota-soft" => {
            let (what, amount) = assignment(name, text)?;
            quotas
                .set_soft_by_name(what, amount)
                .map_err(|_| OptionError::BadValue {
                    option: name,
                    value: text,
                })?;
        }
        "timeout" => match assignment(name, text)? {
            ("watch-event", seconds) => {
                config.watch_event_timeout_milliseconds = u64::from(seconds) * 1000
            }
            _ => {
                return Err(OptionError::BadValue {
                    option: name,
                    value: text,
                });
            }
        },
        "priv-domid" => config.privileged_domain = domain_value(name, text)?,
        _ => return Ok(false),
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn parse(arguments: &[&str]) -> Result<Config, std::string::String> {
        let mut config = Config::default();
        for_each_option(
            arguments.iter().copied(),
            &STORE_OPTIONS_WITH_VALUE,
            &STORE_FLAGS,
            |name, value| apply_store_option(&mut config, name, value).map(|_| ()),
        )
        .map_err(|error| std::format!("{error}"))?;
        Ok(config)
    }

    #[test]
    fn every_spelling_of_a_quota_option() {
        for arguments in [
            &["-E", "7"][..],
            &["-E7"],
            &["--entry-nb", "7"],
            &["--entry-nb=7"],
            &["-Q", "nodes=7"],
        ] {
            assert_eq!(
                parse(arguments).unwrap().quotas.get(QuotaKind::Nodes),
                7,
                "{arguments:?}"
            );
        }
        let config = parse(&[
            "-K",
            "-M",
            "5000",
            "-q",
            "memory=9",
            "-w",
            "watch-event=3",
            "--priv-domid",
            "2",
        ])
        .unwrap();
        assert!(config.keep_orphans);
        assert_eq!(
            config.quotas.get(QuotaKind::PathMaxBytes),
            2048,
            "clamped like C"
        );
        assert_eq!(config.quotas.get(QuotaKind::SoftMemoryBytes), 9);
        assert_eq!(config.watch_event_timeout_milliseconds, 3000);
        assert_eq!(config.privileged_domain, DomainId(2));
    }

    #[test]
    fn refusals() {
        let failures: Vec<_> = [
            &["-X"][..],
            &["-E"],
            &["-E", "many"],
            &["--keep-orphans=1"],
            &["--quota", "bogus=1"],
            &["--timeout", "other=1"],
            &["--priv-domid", "32752"],
            &["plain"],
        ]
        .iter()
        .map(|arguments| parse(arguments).is_err())
        .collect();
        assert!(failures.iter().all(|failed| *failed));
    }
}
