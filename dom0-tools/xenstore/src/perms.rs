//! Node permissions as Xen's xenstore keeps them (`docs/misc/xenstore.txt`, "Permissions"): a list whose first
//! entry names the node's owner and the access every domain not listed gets; later entries give listed domains
//! their own access. Owners and privileged connections may do anything.

use crate::XsError;
use std::fmt;

/// One kind of access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `n`: none.
    None,
    /// `r`: read.
    Read,
    /// `w`: write.
    Write,
    /// `b`: both.
    Both,
}

impl Access {
    fn letter(self) -> char {
        match self {
            Access::None => 'n',
            Access::Read => 'r',
            Access::Write => 'w',
            Access::Both => 'b',
        }
    }

    fn allows(self, want: Want) -> bool {
        matches!((self, want), (Access::Both, _) | (Access::Read, Want::Read) | (Access::Write, Want::Write))
    }
}

/// What an operation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    Read,
    Write,
}

/// One entry: a domain and its access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perm {
    pub domid: u16,
    pub access: Access,
}

impl Perm {
    /// Parses `r5`-style text.
    pub fn parse(s: &str) -> Result<Perm, XsError> {
        let mut chars = s.chars();
        let access = match chars.next() {
            Some('n') => Access::None,
            Some('r') => Access::Read,
            Some('w') => Access::Write,
            Some('b') => Access::Both,
            _ => return Err(XsError::Einval),
        };
        let domid: u16 = chars.as_str().parse().map_err(|_| XsError::Einval)?;
        Ok(Perm { domid, access })
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.access.letter(), self.domid)
    }
}

/// A node's permission list (never empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Perms(Vec<Perm>);

impl Perms {
    /// Owned by `domid`, nobody else has access (`n<domid>`).
    pub fn owned_by(domid: u16) -> Perms {
        Perms(vec![Perm { domid, access: Access::None }])
    }

    /// From a non-empty list.
    pub fn from_list(list: Vec<Perm>) -> Result<Perms, XsError> {
        if list.is_empty() {
            return Err(XsError::Einval);
        }
        Ok(Perms(list))
    }

    /// The owner.
    pub fn owner(&self) -> u16 {
        self.0[0].domid
    }

    /// Sets the owner (a node created by an unprivileged domain belongs to it).
    pub fn set_owner(&mut self, domid: u16) {
        self.0[0].domid = domid;
    }

    /// The entries.
    pub fn list(&self) -> &[Perm] {
        &self.0
    }

    /// Whether domain `domid` may do `want` (privileged connections are checked before this).
    pub fn allows(&self, domid: u16, want: Want) -> bool {
        if self.owner() == domid {
            return true;
        }
        let access = self.0[1..].iter().find(|p| p.domid == domid).map_or(self.0[0].access, |p| p.access);
        access.allows(want)
    }

    /// The `GET_PERMS` payload: each entry NUL-terminated.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &self.0 {
            out.extend_from_slice(p.to_string().as_bytes());
            out.push(0);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_default_and_listed_domains() {
        let p = Perms::from_list(vec![
            Perm::parse("n0").unwrap(),
            Perm::parse("r5").unwrap(),
            Perm::parse("b7").unwrap(),
            Perm::parse("w9").unwrap(),
        ])
        .unwrap();
        assert!(p.allows(0, Want::Write));
        assert!(p.allows(5, Want::Read) && !p.allows(5, Want::Write));
        assert!(p.allows(7, Want::Read) && p.allows(7, Want::Write));
        assert!(!p.allows(9, Want::Read) && p.allows(9, Want::Write));
        assert!(!p.allows(3, Want::Read) && !p.allows(3, Want::Write));
        let open = Perms::from_list(vec![Perm::parse("r2").unwrap()]).unwrap();
        assert!(open.allows(3, Want::Read) && !open.allows(3, Want::Write));
        assert_eq!(p.encode(), b"n0\0r5\0b7\0w9\0");
    }

    #[test]
    fn bad_text() {
        for bad in ["", "x1", "r", "r-1", "r70000", "rr1"] {
            assert_eq!(Perm::parse(bad), Err(XsError::Einval), "{bad:?}");
        }
        assert_eq!(Perms::from_list(vec![]), Err(XsError::Einval));
    }
}
