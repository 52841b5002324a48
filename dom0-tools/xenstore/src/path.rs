//! Xenstore paths: syntax checks and the canonical absolute form (`docs/misc/xenstore.txt`, "Paths").

use crate::XsError;

/// Longest absolute path (`XENSTORE_ABS_PATH_MAX`).
pub const ABS_PATH_MAX: usize = 3072;
/// Longest relative path (`XENSTORE_REL_PATH_MAX`).
pub const REL_PATH_MAX: usize = 2048;

/// The home directory of a domain; relative paths are relative to it.
pub fn home(domid: u16) -> String {
    format!("/local/domain/{domid}")
}

fn valid_chars(p: &str) -> bool {
    p.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_@-".contains(&b))
}

/// The absolute form of a node path given by domain `domid`: relative paths are prefixed with its home. Rejects
/// empty paths, bad characters, `//`, a trailing `/` (except the root) and over-long paths with EINVAL, and
/// special (`@…`) paths, which only watches may name.
pub fn canonical(domid: u16, path: &str) -> Result<String, XsError> {
    if path.is_empty() || path.starts_with('@') || !valid_chars(path) {
        return Err(XsError::Einval);
    }
    let abs = if path.starts_with('/') {
        if path.len() > ABS_PATH_MAX {
            return Err(XsError::Einval);
        }
        path.to_string()
    } else {
        if path.len() > REL_PATH_MAX {
            return Err(XsError::Einval);
        }
        format!("{}/{path}", home(domid))
    };
    if abs.contains("//") || (abs.len() > 1 && abs.ends_with('/')) || abs.len() > ABS_PATH_MAX {
        return Err(XsError::Einval);
    }
    Ok(abs)
}

/// A watch path: a node path in canonical form, or one of the special paths (`@introduceDomain`,
/// `@releaseDomain`, or any other `@name`, which never fires).
pub fn watch_canonical(domid: u16, path: &str) -> Result<String, XsError> {
    if let Some(rest) = path.strip_prefix('@') {
        if rest.is_empty() || !valid_chars(rest) || rest.contains('/') || path.len() > ABS_PATH_MAX {
            return Err(XsError::Einval);
        }
        return Ok(path.to_string());
    }
    canonical(domid, path)
}

/// The parent of an absolute path (`None` for the root).
pub fn parent(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

/// The last component of an absolute path.
pub fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or("")
}

/// Whether `path` is `dir` or lies below it.
pub fn is_at_or_below(path: &str, dir: &str) -> bool {
    dir == "/" || path == dir || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

/// `path` as domain `domid` named it: relative to its home when it was given relative.
pub fn shown(path: &str, domid: u16, relative: bool) -> String {
    if relative {
        let h = home(domid);
        if let Some(rest) = path.strip_prefix(&h).and_then(|r| r.strip_prefix('/')) {
            return rest.to_string();
        }
    }
    path.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        assert_eq!(canonical(3, "device/vbd").unwrap(), "/local/domain/3/device/vbd");
        assert_eq!(canonical(3, "/vm").unwrap(), "/vm");
        assert_eq!(canonical(0, "/").unwrap(), "/");
        for bad in ["", "a//b", "/a/", "a b", "/a\nb", "@releaseDomain", "x/"] {
            assert_eq!(canonical(0, bad), Err(XsError::Einval), "{bad:?}");
        }
        assert_eq!(canonical(0, &"a".repeat(REL_PATH_MAX + 1)), Err(XsError::Einval));
        assert!(canonical(0, &"a".repeat(REL_PATH_MAX)).is_ok());
        assert_eq!(canonical(0, &format!("/{}", "a".repeat(ABS_PATH_MAX))), Err(XsError::Einval));
        assert_eq!(watch_canonical(1, "@releaseDomain").unwrap(), "@releaseDomain");
        assert_eq!(watch_canonical(1, "@"), Err(XsError::Einval));
    }

    #[test]
    fn relations() {
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/"), None);
        assert_eq!(basename("/a/bc"), "bc");
        assert!(is_at_or_below("/a/b", "/a"));
        assert!(!is_at_or_below("/ab", "/a"));
        assert!(is_at_or_below("/x", "/"));
        assert_eq!(shown("/local/domain/2/x/y", 2, true), "x/y");
        assert_eq!(shown("/local/domain/2/x/y", 2, false), "/local/domain/2/x/y");
    }
}
