//! The stub's command line: an argv splitter and a typed parser.
//!
//! `init-xenstore-domain` passes `--event <dom0 port>` followed by the text of its `--param`
//! option (e.g. `-E 1000 --priv-domid 0`); `xl` passes its `cmdline=`. This module
//! recognises what the kernel needs and keeps every other argument, in order, for the
//! xenstore engine's option parser.
//!
//! The test modes (`--self-test`, `--hostile-ring`, `--debug-crash`) exist only in the test
//! image (cargo feature `test-modes`): the product image keeps them as unrecognised
//! arguments, so the option parser logs them as unknown like any other.
//!
//! Splitting rules: arguments are separated by ASCII whitespace; an argument that *starts*
//! with `"` or `'` extends to the matching quote (quotes removed, no escapes), so
//! `--param "a b"` style values survive. A quote inside an argument is an ordinary byte.

use core::fmt;

use heapless::Vec;
use xen_hypercall::{DomId, EventChannelPort};

/// Most arguments kept for later parsing.
pub const MAX_UNRECOGNISED_ARGUMENTS: usize = 64;

/// Splits a command line into arguments (see the module documentation for quoting).
pub fn split_arguments(command_line: &str) -> ArgumentSplitter<'_> {
    ArgumentSplitter { rest: command_line }
}

/// Iterator returned by [`split_arguments`].
#[derive(Clone, Debug)]
pub struct ArgumentSplitter<'a> {
    rest: &'a str,
}

impl<'a> Iterator for ArgumentSplitter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let trimmed = self
            .rest
            .trim_start_matches(|character: char| character.is_ascii_whitespace());
        let first = trimmed.chars().next()?;
        if first == '"' || first == '\'' {
            let body = &trimmed[1..];
            match body.find(first) {
                Some(end) => {
                    self.rest = &body[end + 1..];
                    Some(&body[..end])
                }
                None => {
                    // Unterminated quote: the rest of the line is the argument.
                    self.rest = "";
                    Some(body)
                }
            }
        } else {
            let end = trimmed
                .find(|character: char| character.is_ascii_whitespace())
                .unwrap_or(trimmed.len());
            self.rest = &trimmed[end..];
            Some(&trimmed[..end])
        }
    }
}

/// A deliberate failure for testing the crash paths (`--debug-crash <kind>`).
#[cfg(feature = "test-modes")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DebugCrash {
    /// `panic`: a Rust panic.
    Panic,
    /// `page-fault`: a CPU page fault (tests the exception handlers).
    PageFault,
}

/// What the kernel understood from its command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandLine<'a> {
    /// `--self-test`: run the platform self-test and power off.
    #[cfg(feature = "test-modes")]
    pub self_test: bool,
    /// `--hostile-ring`: test mode, act as a guest that corrupts its own xenstore ring.
    #[cfg(feature = "test-modes")]
    pub hostile_ring: bool,
    /// `--verbose`: log at debug level.
    pub verbose: bool,
    /// `--event <port>`: dom0's unbound port for its xenstore connection.
    pub dom0_event_port: Option<EventChannelPort>,
    /// `--debug-crash panic|page-fault`: crash on purpose right after boot.
    #[cfg(feature = "test-modes")]
    pub debug_crash: Option<DebugCrash>,
    /// `--live-update` (or C xenstored's `-U`): started by a live update; the state is boot
    /// module 0 (docs/live-update.md, "The handover").
    pub live_update: bool,
    /// `--priv-domid <domid>`: the privileged (control) domain; default 0.
    pub privileged_domid: Option<DomId>,
    /// Every other argument, in order (options and their values alike).
    pub unrecognised: Vec<&'a str, MAX_UNRECOGNISED_ARGUMENTS>,
}

/// Why the command line was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandLineError<'a> {
    /// An option that needs a value was last.
    MissingValue { option: &'a str },
    /// A value is not one of the accepted words.
    #[cfg(feature = "test-modes")]
    BadChoice { option: &'a str, value: &'a str },
    /// A value is not a number in range (decimal or `0x` hexadecimal).
    BadNumber { option: &'a str, value: &'a str },
    /// More than [`MAX_UNRECOGNISED_ARGUMENTS`] arguments to keep.
    TooManyArguments,
}

impl fmt::Display for CommandLineError<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandLineError::MissingValue { option } => {
                write!(formatter, "{option} needs a value")
            }
            #[cfg(feature = "test-modes")]
            CommandLineError::BadChoice { option, value } => {
                write!(formatter, "{option}: {value:?} is not an accepted value")
            }
            CommandLineError::BadNumber { option, value } => {
                write!(formatter, "{option}: {value:?} is not a valid number")
            }
            CommandLineError::TooManyArguments => write!(
                formatter,
                "more than {MAX_UNRECOGNISED_ARGUMENTS} unrecognised arguments"
            ),
        }
    }
}

/// Parses a number: decimal, or hexadecimal with a `0x` prefix.
pub fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Splits `--name=value` into its parts.
fn split_inline_value(argument: &str) -> (&str, Option<&str>) {
    if argument.starts_with("--")
        && let Some((name, value)) = argument.split_once('=')
    {
        return (name, Some(value));
    }
    (argument, None)
}

impl<'a> CommandLine<'a> {
    /// Parses `command_line`. Options may be given as `--name value` or `--name=value`.
    pub fn parse(command_line: &'a str) -> Result<CommandLine<'a>, CommandLineError<'a>> {
        let mut parsed = CommandLine::default();
        let mut arguments = split_arguments(command_line);
        while let Some(argument) = arguments.next() {
            let (option, inline_value) = split_inline_value(argument);
            let mut value = |option: &'a str| -> Result<&'a str, CommandLineError<'a>> {
                inline_value
                    .or_else(|| arguments.next())
                    .ok_or(CommandLineError::MissingValue { option })
            };
            match option {
                #[cfg(feature = "test-modes")]
                "--self-test" if inline_value.is_none() => parsed.self_test = true,
                #[cfg(feature = "test-modes")]
                "--hostile-ring" if inline_value.is_none() => parsed.hostile_ring = true,
                "--verbose" if inline_value.is_none() => parsed.verbose = true,
                "--live-update" | "-U" if inline_value.is_none() => parsed.live_update = true,
                "--event" => {
                    let text = value(option)?;
                    let port = parse_number(text)
                        .and_then(|number| u32::try_from(number).ok())
                        .ok_or(CommandLineError::BadNumber {
                            option,
                            value: text,
                        })?;
                    parsed.dom0_event_port = Some(EventChannelPort(port));
                }
                #[cfg(feature = "test-modes")]
                "--debug-crash" => {
                    let text = value(option)?;
                    parsed.debug_crash = Some(match text {
                        "panic" => DebugCrash::Panic,
                        "page-fault" => DebugCrash::PageFault,
                        _ => {
                            return Err(CommandLineError::BadChoice {
                                option,
                                value: text,
                            });
                        }
                    });
                }
                "--priv-domid" => {
                    let text = value(option)?;
                    let domid = parse_number(text)
                        .and_then(|number| u16::try_from(number).ok())
                        .filter(|&number| DomId(number).is_real_domain())
                        .ok_or(CommandLineError::BadNumber {
                            option,
                            value: text,
                        })?;
                    parsed.privileged_domid = Some(DomId(domid));
                }
                _ => parsed
                    .unrecognised
                    .push(argument)
                    .map_err(|_| CommandLineError::TooManyArguments)?,
            }
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec as StdVec;

    fn split(text: &str) -> StdVec<&str> {
        split_arguments(text).collect()
    }

    #[test]
    fn splits_on_whitespace() {
        assert_eq!(
            split("  --event 5\t-E  1000\n"),
            ["--event", "5", "-E", "1000"]
        );
        assert!(split("").is_empty());
        assert!(split("   ").is_empty());
    }

    #[test]
    fn quotes_group_arguments() {
        assert_eq!(
            split("--param \"a b\" 'c d' e"),
            ["--param", "a b", "c d", "e"]
        );
        assert_eq!(split("x\"y z"), ["x\"y", "z"]);
        assert_eq!(split("\"unterminated rest"), ["unterminated rest"]);
        assert_eq!(split("\"\""), [""]);
    }

    #[test]
    fn parses_init_xenstore_domain_line() {
        let parsed = CommandLine::parse("--event 12 -E 1000 --priv-domid 0").expect("valid");
        assert_eq!(parsed.dom0_event_port, Some(EventChannelPort(12)));
        assert_eq!(parsed.privileged_domid, Some(DomId(0)));
        assert_eq!(&parsed.unrecognised[..], ["-E", "1000"]);
    }

    #[test]
    fn a_live_update_is_recognised_in_either_spelling() {
        let parsed = CommandLine::parse("--event 12 -E 1000 --live-update").expect("valid");
        assert!(parsed.live_update);
        assert_eq!(&parsed.unrecognised[..], ["-E", "1000"]);
        assert!(CommandLine::parse("-U").expect("valid").live_update);
        assert!(!CommandLine::parse("--event 3").expect("valid").live_update);
    }

    #[test]
    fn accepts_inline_values_and_hex() {
        let parsed = CommandLine::parse("--event=0x10 --unknown=3").expect("valid");
        assert_eq!(parsed.dom0_event_port, Some(EventChannelPort(16)));
        assert_eq!(&parsed.unrecognised[..], ["--unknown=3"]);
    }

    /// The product image does not know the test modes: they stay unrecognised arguments,
    /// which the xenstore's option parser then reports as unknown.
    #[cfg(not(feature = "test-modes"))]
    #[test]
    fn product_image_does_not_know_test_modes() {
        let parsed = CommandLine::parse("--self-test --hostile-ring --debug-crash panic --event 3")
            .expect("valid");
        assert_eq!(parsed.dom0_event_port, Some(EventChannelPort(3)));
        assert_eq!(
            &parsed.unrecognised[..],
            ["--self-test", "--hostile-ring", "--debug-crash", "panic"]
        );
    }

    #[cfg(feature = "test-modes")]
    #[test]
    fn test_image_parses_test_modes() {
        let parsed = CommandLine::parse("--event 12 --self-test --hostile-ring").expect("valid");
        assert!(parsed.self_test);
        assert!(parsed.hostile_ring);
        assert_eq!(parsed.dom0_event_port, Some(EventChannelPort(12)));
        assert!(parsed.unrecognised.is_empty());
        let parsed = CommandLine::parse("--event 12").expect("valid");
        assert!(!parsed.self_test);
        assert!(!parsed.hostile_ring);
    }

    #[test]
    fn reports_bad_and_missing_values() {
        assert_eq!(
            CommandLine::parse("--event"),
            Err(CommandLineError::MissingValue { option: "--event" })
        );
        assert_eq!(
            CommandLine::parse("--event five"),
            Err(CommandLineError::BadNumber {
                option: "--event",
                value: "five"
            })
        );
        assert_eq!(
            CommandLine::parse("--event 4294967296"),
            Err(CommandLineError::BadNumber {
                option: "--event",
                value: "4294967296"
            })
        );
        assert_eq!(
            CommandLine::parse("--priv-domid 32752"),
            Err(CommandLineError::BadNumber {
                option: "--priv-domid",
                value: "32752"
            })
        );
    }

    #[cfg(feature = "test-modes")]
    #[test]
    fn debug_crash_choices() {
        let parsed = CommandLine::parse("--debug-crash page-fault").expect("valid");
        assert_eq!(parsed.debug_crash, Some(DebugCrash::PageFault));
        let parsed = CommandLine::parse("--debug-crash=panic").expect("valid");
        assert_eq!(parsed.debug_crash, Some(DebugCrash::Panic));
        assert_eq!(
            CommandLine::parse("--debug-crash reboot"),
            Err(CommandLineError::BadChoice {
                option: "--debug-crash",
                value: "reboot"
            })
        );
    }

    #[test]
    fn too_many_arguments_is_an_error() {
        let line = "x ".repeat(MAX_UNRECOGNISED_ARGUMENTS + 1);
        assert_eq!(
            CommandLine::parse(&line),
            Err(CommandLineError::TooManyArguments)
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("42"), Some(42));
        assert_eq!(parse_number("0x2A"), Some(42));
        assert_eq!(parse_number("-1"), None);
        assert_eq!(parse_number(""), None);
    }
}
