//! The administrator's requests: `XS_CONTROL` (C xenstored's commands, as sent by
//! `xenstore-control`) and the quota requests `XS_GET_QUOTA` and `XS_SET_QUOTA`
//! (`docs/protocol.md`, "Quotas"). All are for the privileged domain only (checked before
//! parsing). The accounting check behind `check` is in `control.rs`.

use crate::engine::{Engine, Printable, Reply, ok_reply};
use crate::fallible::{self, Text};
use crate::live_update::LiveUpdateSupport;
use crate::quota::{QUOTA_DISABLED, QuotaKind};
use crate::request::{ControlCommand, QuotaQuery};
use crate::wire::MessageHeader;
use crate::{ConnectionId, DomainId, Platform, StoreError, StoreResult};
use alloc::vec::Vec;
use core::fmt::Write;

/// The commands listed before `live-update` in the `help` reply.
macro_rules! help_head {
    () => {
        "Control commands:\ncheck\nhelp\n"
    };
}

/// The commands listed after `live-update`, and the reply's NUL.
macro_rules! help_tail {
    () => {
        "log [on|off]\nlogfile <file>\nmemreport [<file>]\nprint <string>\n\
         quota [set <name> <val>|<domid>|max [-r]]\nquota-soft [set <name> <val>]\n\0"
    };
}

/// The `help` reply, NUL included: constant replies are not allocated.
const HELP: &[u8] = concat!(help_head!(), help_tail!()).as_bytes();

/// The `help` reply of a front end that supports live update: `live-update` with C 4.22's
/// arguments and note (its second line indented by four spaces, as in C), in our list's
/// order and format.
const HELP_WITH_LIVE_UPDATE: &[u8] = concat!(
    help_head!(),
    "live-update [-c <cmdline>] [-F] [-t <timeout>] [-v <version>] <file>\n    \
     Default timeout is 60 seconds, default version is 2.\n",
    help_tail!()
)
.as_bytes();

/// The reply of commands that answer nothing else (needs no memory, so a command that
/// changed something can always say so).
const OK: Reply = Reply::Borrowed(b"OK\0");

impl Engine {
    /// `XS_CONTROL`: runs one administrator's command.
    pub(crate) fn control(
        &mut self,
        connection: ConnectionId,
        header: &MessageHeader,
        command: ControlCommand<'_>,
    ) -> StoreResult<Reply> {
        match command {
            ControlCommand::Help => Ok(Reply::Borrowed(match self.config.live_update {
                LiveUpdateSupport::None => HELP,
                LiveUpdateSupport::KernelImage { .. } | LiveUpdateSupport::Executable => {
                    HELP_WITH_LIVE_UPDATE
                }
            })),
            ControlCommand::LiveUpdate(step) => self.control_live_update(connection, header, step),
            ControlCommand::LogStatus => Ok(Reply::Borrowed(if self.trace_enabled {
                b"on\n\0"
            } else {
                b"off\n\0"
            })),
            ControlCommand::SetLog { enabled } => {
                self.trace_enabled = enabled;
                Ok(OK)
            }
            ControlCommand::LogFile => Ok(OK),
            ControlCommand::Print { text } => {
                log::info!(target: crate::engine::ACCESS_LOG_TARGET, "control: {}", Printable(text));
                Ok(OK)
            }
            ControlCommand::Check => self.control_check(),
            ControlCommand::MemoryReport => {
                let mut report = Text::new();
                self.write_memory_report(&mut report);
                log::info!("{}", Printable(report.as_bytes()));
                report.into_reply().map(Reply::Owned)
            }
            ControlCommand::QuotaList => self.control_quota_list(),
            ControlCommand::QuotaSet { kind, value } => {
                self.config.quotas.set(kind, value);
                Ok(OK)
            }
            ControlCommand::QuotaMax { reset } => self.control_quota_max(reset),
            ControlCommand::QuotaOfDomain { domain } => self.control_quota_of(domain),
            ControlCommand::SoftQuotaList => {
                let value = self.config.quotas.get(QuotaKind::SoftMemoryBytes);
                let mut text = Text::new();
                let _ = writeln!(
                    text,
                    "{:<17}: {:>8} {}",
                    "memory",
                    value,
                    QuotaKind::SoftMemoryBytes.description()
                );
                text.into_reply().map(Reply::Owned)
            }
            ControlCommand::SoftMemoryQuotaSet { value } => {
                self.config.quotas.set(QuotaKind::SoftMemoryBytes, value);
                Ok(OK)
            }
        }
    }

    /// `check`: `OK` only when every count matched a full recount; otherwise the counters
    /// are corrected and the reply says how many were wrong (tests look for it).
    fn control_check(&mut self) -> StoreResult<Reply> {
        // The reply's room is taken first (the longest count, and the NUL): the repair
        // cannot be undone.
        let mut text = Text::with_capacity(48)?;
        let repaired = self.try_check_accounting()?;
        if repaired > 0 {
            log::warn!("check: corrected {repaired} accounting counters");
            let _ = write!(text, "corrected {repaired} counters");
            return text.into_reply().map(Reply::Owned);
        }
        Ok(OK)
    }

    /// `quota`: the global quotas, with their descriptions.
    fn control_quota_list(&self) -> StoreResult<Reply> {
        let mut text = Text::new();
        for kind in QuotaKind::ALL {
            if kind == QuotaKind::SoftMemoryBytes {
                continue;
            }
            let _ = writeln!(
                text,
                "{:<17}: {:>8} {}",
                kind.name(),
                self.config.quotas.get(kind),
                kind.description()
            );
        }
        text.into_reply().map(Reply::Owned)
    }

    /// `quota max [-r]`: the largest usage any unprivileged domain reached.
    fn control_quota_max(&mut self, reset: bool) -> StoreResult<Reply> {
        let max = self.domains.max_seen;
        let mut text = Text::new();
        for kind in QuotaKind::ALL {
            if let Some(value) = max.counter(kind)
                && kind != QuotaKind::SoftMemoryBytes
            {
                let _ = writeln!(text, "{:<17}: {:>8}", kind.name(), value);
            }
        }
        // The reply is made before the maxima are reset: that cannot be undone.
        let reply = text.into_reply()?;
        if reset {
            self.domains.max_seen = Default::default();
        }
        Ok(Reply::Owned(reply))
    }

    /// `quota <domid>`: what the domain uses, against its quotas.
    fn control_quota_of(&self, domain: DomainId) -> StoreResult<Reply> {
        let record = self.domains.get(domain).ok_or(StoreError::NoEntry)?;
        let mut usage = record.usage;
        usage.outstanding = self.outstanding_requests_of(domain);
        let mut text = Text::new();
        for kind in QuotaKind::ALL {
            if let Some(value) = usage.counter(kind)
                && kind != QuotaKind::SoftMemoryBytes
            {
                let _ = writeln!(
                    text,
                    "{:<17}: {:>8} (max {})",
                    kind.name(),
                    value,
                    record.quotas.get(kind)
                );
            }
        }
        text.into_reply().map(Reply::Owned)
    }

    /// `XS_GET_QUOTA`: the names of the quotas in force, or one quota's value.
    pub(crate) fn get_quota(
        &mut self,
        platform: &mut dyn Platform,
        query: QuotaQuery<'_>,
    ) -> StoreResult<Reply> {
        let (quotas, kind) = match query {
            QuotaQuery::Names => return self.quota_names().map(Reply::Owned),
            QuotaQuery::Global { kind } => (self.config.quotas, kind),
            QuotaQuery::Domain { domain, name } => {
                self.known_domain_features(platform, domain)?;
                (self.quotas_of(domain), QuotaKind::from_wire_name(name)?)
            }
        };
        fallible::decimal_reply(u64::from(quotas.get(kind))).map(Reply::Owned)
    }

    /// The names of the quotas, separated by spaces, then a NUL. C 4.22 lists every quota
    /// that is not disabled (its `UINT_MAX`, which no request can set); a limit of 0 (no
    /// limit) is listed too.
    fn quota_names(&self) -> StoreResult<Vec<u8>> {
        let mut reply = Vec::new();
        let names = QuotaKind::ALL
            .into_iter()
            .filter(|kind| self.config.quotas.get(*kind) != QUOTA_DISABLED)
            .map(QuotaKind::name);
        for (index, name) in names.enumerate() {
            if index > 0 {
                fallible::push(&mut reply, b' ')?;
            }
            fallible::extend(&mut reply, name.as_bytes())?;
        }
        fallible::push(&mut reply, 0)?;
        Ok(reply)
    }

    /// `XS_SET_QUOTA`: sets the global value of a quota, or a domain's. A domain that does
    /// not exist is `ENOENT`; then an unknown name, or the value C reserves for "disabled"
    /// (`UINT_MAX`: `-1` as `atoi()` reads it), is `EINVAL`.
    pub(crate) fn set_quota(
        &mut self,
        platform: &mut dyn Platform,
        domain: Option<DomainId>,
        name: &[u8],
        value: u32,
    ) -> StoreResult<Reply> {
        if let Some(domain) = domain {
            self.known_domain_features(platform, domain)?;
        }
        let kind = QuotaKind::from_wire_name(name)?;
        if value == QUOTA_DISABLED {
            return Err(StoreError::Invalid);
        }
        match domain {
            None => self.config.quotas.set(kind, value),
            Some(domain) => {
                let record = self.domains.get_mut(domain).ok_or(StoreError::NoEntry)?;
                record.quotas.set(kind, value);
            }
        }
        ok_reply()
    }
}
