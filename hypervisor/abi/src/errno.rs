//! Xen's error numbers (`xen/include/public/errno.h`, Linux's numbering on x86). A hypercall that fails returns
//! the negation of one of these in RAX; [`Errno`] is that number, always positive inside Keel, turned into the
//! guest's negative value in one place ([`Errno::to_return`]).

use core::fmt;

/// A Xen errno (positive). Handlers return `Err(Errno)`, and the dispatcher negates it exactly once.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct Errno(u16);

macro_rules! errnos {
    ($($name:ident = $value:literal),* $(,)?) => {
        impl Errno {
            $(
                #[doc = concat!("`", stringify!($name), "` (", stringify!($value), ").")]
                pub const $name: Errno = Errno($value);
            )*

            /// The symbolic name (`"EINVAL"`), or `"E?"` for a number Xen does not define.
            pub const fn name(self) -> &'static str {
                match self.0 {
                    $($value => stringify!($name),)*
                    _ => "E?",
                }
            }
        }

        /// The same values as plain constants, for `use keel_abi::errno::*`.
        pub mod consts {
            use super::Errno;
            $(
                #[doc = concat!("`", stringify!($name), "`.")]
                pub const $name: Errno = Errno::$name;
            )*
        }
    };
}

errnos! {
    EPERM = 1, ENOENT = 2, ESRCH = 3, EINTR = 4, EIO = 5, ENXIO = 6, E2BIG = 7, ENOEXEC = 8, EBADF = 9,
    ECHILD = 10, EAGAIN = 11, ENOMEM = 12, EACCES = 13, EFAULT = 14, EBUSY = 16, EEXIST = 17, EXDEV = 18,
    ENODEV = 19, EISDIR = 21, EINVAL = 22, ENFILE = 23, EMFILE = 24, ENOSPC = 28, EROFS = 30, EMLINK = 31,
    EDOM = 33, ERANGE = 34, EDEADLK = 35, ENAMETOOLONG = 36, ENOLCK = 37, ENOSYS = 38, ENOTEMPTY = 39,
    ENODATA = 61, ETIME = 62, EBADMSG = 74, EOVERFLOW = 75, EILSEQ = 84, ERESTART = 85, ENOTSOCK = 88,
    EMSGSIZE = 90, EOPNOTSUPP = 95, EADDRINUSE = 98, EADDRNOTAVAIL = 99, ENOBUFS = 105, EISCONN = 106,
    ENOTCONN = 107, ETIMEDOUT = 110, ECONNREFUSED = 111,
}

impl Errno {
    /// The positive number.
    pub const fn get(self) -> u16 {
        self.0
    }

    /// The value a hypercall returns in RAX for this error: `-errno` as a 64-bit two's complement.
    pub const fn to_return(self) -> u64 {
        (-(self.0 as i64)) as u64
    }

    /// The negative value a guest sees, as a signed number.
    pub const fn negated(self) -> i64 {
        -(self.0 as i64)
    }

    /// Decodes a hypercall's return value: `Some(errno)` for -1 ..= -4095 (Linux's error range), `None` otherwise.
    pub const fn from_return(rax: i64) -> Option<Errno> {
        if rax < 0 && rax >= -4095 {
            Some(Errno((-rax) as u16))
        } else {
            None
        }
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "-{} ({})", self.0, self.name())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;

    #[test]
    fn returns_are_negative_and_round_trip() {
        assert_eq!(Errno::EINVAL.to_return() as i64, -22);
        assert_eq!(Errno::ENOSPC.negated(), -28);
        assert_eq!(Errno::from_return(-22), Some(Errno::EINVAL));
        assert_eq!(Errno::from_return(22), None);
        assert_eq!(Errno::from_return(0), None);
        assert_eq!(Errno::from_return(-5000), None);
        assert_eq!(Errno::ETIME.name(), "ETIME");
        assert_eq!(format!("{}", Errno::EPERM), "-1 (EPERM)");
        assert_eq!(format!("{:?}", Errno::ENOSYS), "ENOSYS(38)");
    }
}
