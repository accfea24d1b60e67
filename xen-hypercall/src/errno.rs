//! Xen error numbers (`xen/include/public/errno.h`), returned negated in `rax`.

use core::fmt;

/// Result of a hypercall wrapper: the value on success, the Xen errno on failure.
pub type XenResult<T> = Result<T, XenErrno>;

/// A Xen error number (`enum xen_errno`, values from x86 Linux).
///
/// Hypercalls return `-errno` in `rax`; [`XenErrno::from_return_value`] converts. Numbers that
/// `errno.h` does not name (or that a future Xen adds) are kept as [`XenErrno::Other`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XenErrno {
    /// `EPERM` 1: operation not permitted (e.g. XSM refused it).
    NotPermitted,
    /// `ENOENT` 2.
    NoEntry,
    /// `ESRCH` 3: no such domain.
    NoSuchDomain,
    /// `EIO` 5.
    InputOutput,
    /// `ENXIO` 6.
    NoDeviceOrAddress,
    /// `E2BIG` 7.
    ArgumentListTooLong,
    /// `EBADF` 9.
    BadFile,
    /// `EAGAIN` 11 (also `EWOULDBLOCK`).
    TryAgain,
    /// `ENOMEM` 12.
    OutOfMemory,
    /// `EACCES` 13: permission denied (also: domctl interface version mismatch).
    AccessDenied,
    /// `EFAULT` 14: Xen could not access a guest buffer.
    BadAddress,
    /// `EBUSY` 16.
    Busy,
    /// `EEXIST` 17.
    Exists,
    /// `EXDEV` 18.
    CrossDevice,
    /// `ENODEV` 19.
    NoDevice,
    /// `EINVAL` 22.
    InvalidArgument,
    /// `ENOSPC` 28.
    NoSpace,
    /// `ERANGE` 34.
    OutOfRange,
    /// `EDEADLK` 35.
    Deadlock,
    /// `ENOSYS` 38: hypercall or sub-operation not implemented (or not available to HVM).
    NotImplemented,
    /// `ENODATA` 61.
    NoData,
    /// `ETIME` 62.
    TimerExpired,
    /// `EOVERFLOW` 75.
    Overflow,
    /// `EOPNOTSUPP` 95.
    NotSupported,
    /// `ETIMEDOUT` 110.
    TimedOut,
    /// Any other error number (positive value as in `errno.h`).
    Other(u32),
}

impl XenErrno {
    /// The positive error number as defined in `errno.h`.
    pub const fn number(self) -> u32 {
        match self {
            XenErrno::NotPermitted => 1,
            XenErrno::NoEntry => 2,
            XenErrno::NoSuchDomain => 3,
            XenErrno::InputOutput => 5,
            XenErrno::NoDeviceOrAddress => 6,
            XenErrno::ArgumentListTooLong => 7,
            XenErrno::BadFile => 9,
            XenErrno::TryAgain => 11,
            XenErrno::OutOfMemory => 12,
            XenErrno::AccessDenied => 13,
            XenErrno::BadAddress => 14,
            XenErrno::Busy => 16,
            XenErrno::Exists => 17,
            XenErrno::CrossDevice => 18,
            XenErrno::NoDevice => 19,
            XenErrno::InvalidArgument => 22,
            XenErrno::NoSpace => 28,
            XenErrno::OutOfRange => 34,
            XenErrno::Deadlock => 35,
            XenErrno::NotImplemented => 38,
            XenErrno::NoData => 61,
            XenErrno::TimerExpired => 62,
            XenErrno::Overflow => 75,
            XenErrno::NotSupported => 95,
            XenErrno::TimedOut => 110,
            XenErrno::Other(number) => number,
        }
    }

    /// The error for a positive error number.
    pub const fn from_number(number: u32) -> XenErrno {
        match number {
            1 => XenErrno::NotPermitted,
            2 => XenErrno::NoEntry,
            3 => XenErrno::NoSuchDomain,
            5 => XenErrno::InputOutput,
            6 => XenErrno::NoDeviceOrAddress,
            7 => XenErrno::ArgumentListTooLong,
            9 => XenErrno::BadFile,
            11 => XenErrno::TryAgain,
            12 => XenErrno::OutOfMemory,
            13 => XenErrno::AccessDenied,
            14 => XenErrno::BadAddress,
            16 => XenErrno::Busy,
            17 => XenErrno::Exists,
            18 => XenErrno::CrossDevice,
            19 => XenErrno::NoDevice,
            22 => XenErrno::InvalidArgument,
            28 => XenErrno::NoSpace,
            34 => XenErrno::OutOfRange,
            35 => XenErrno::Deadlock,
            38 => XenErrno::NotImplemented,
            61 => XenErrno::NoData,
            62 => XenErrno::TimerExpired,
            75 => XenErrno::Overflow,
            95 => XenErrno::NotSupported,
            110 => XenErrno::TimedOut,
            other => XenErrno::Other(other),
        }
    }

    /// The symbolic name from `errno.h` (`"EPERM"`, …), or `"E?"` for unnamed numbers.
    pub const fn name(self) -> &'static str {
        match self {
            XenErrno::NotPermitted => "EPERM",
            XenErrno::NoEntry => "ENOENT",
            XenErrno::NoSuchDomain => "ESRCH",
            XenErrno::InputOutput => "EIO",
            XenErrno::NoDeviceOrAddress => "ENXIO",
            XenErrno::ArgumentListTooLong => "E2BIG",
            XenErrno::BadFile => "EBADF",
            XenErrno::TryAgain => "EAGAIN",
            XenErrno::OutOfMemory => "ENOMEM",
            XenErrno::AccessDenied => "EACCES",
            XenErrno::BadAddress => "EFAULT",
            XenErrno::Busy => "EBUSY",
            XenErrno::Exists => "EEXIST",
            XenErrno::CrossDevice => "EXDEV",
            XenErrno::NoDevice => "ENODEV",
            XenErrno::InvalidArgument => "EINVAL",
            XenErrno::NoSpace => "ENOSPC",
            XenErrno::OutOfRange => "ERANGE",
            XenErrno::Deadlock => "EDEADLK",
            XenErrno::NotImplemented => "ENOSYS",
            XenErrno::NoData => "ENODATA",
            XenErrno::TimerExpired => "ETIME",
            XenErrno::Overflow => "EOVERFLOW",
            XenErrno::NotSupported => "EOPNOTSUPP",
            XenErrno::TimedOut => "ETIMEDOUT",
            XenErrno::Other(_) => "E?",
        }
    }

    /// Interprets a raw hypercall return value: `>= 0` is success, negative is `-errno`.
    pub const fn from_return_value(value: i64) -> Result<u64, XenErrno> {
        if value >= 0 {
            Ok(value as u64)
        } else {
            // `-value` cannot overflow for any value Xen returns (|errno| < 4096); the
            // saturation keeps the conversion total for arbitrary register contents.
            let number = value.unsigned_abs();
            let number = if number > u32::MAX as u64 {
                u32::MAX
            } else {
                number as u32
            };
            Err(XenErrno::from_number(number))
        }
    }
}

impl fmt::Display for XenErrno {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} ({})", self.name(), self.number())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_number_round_trips() {
        for number in 0..200u32 {
            assert_eq!(XenErrno::from_number(number).number(), number);
        }
    }

    #[test]
    fn return_values_split_into_success_and_errno() {
        assert_eq!(XenErrno::from_return_value(0), Ok(0));
        assert_eq!(XenErrno::from_return_value(0x4_0011), Ok(0x4_0011));
        assert_eq!(
            XenErrno::from_return_value(-38),
            Err(XenErrno::NotImplemented)
        );
        assert_eq!(
            XenErrno::from_return_value(-13),
            Err(XenErrno::AccessDenied)
        );
        assert_eq!(
            XenErrno::from_return_value(i64::MIN),
            Err(XenErrno::Other(u32::MAX))
        );
    }

    #[test]
    fn names_follow_errno_h() {
        assert_eq!(XenErrno::NotPermitted.name(), "EPERM");
        assert_eq!(XenErrno::Busy.name(), "EBUSY");
        assert_eq!(std::format!("{}", XenErrno::NoSuchDomain), "ESRCH (3)");
    }
}
