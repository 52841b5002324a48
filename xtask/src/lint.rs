//! `cargo xtask lint`: rustfmt and clippy with warnings denied, for the host and for the bare-metal crates.

use crate::build::{GUESTS_PACKAGE, HV_PACKAGE, HV_TARGET};
use crate::util::{self, Result};

/// The checks, in order; the first failure stops them.
pub fn cmd() -> Result<()> {
    util::run(util::cargo().args(["fmt", "--all", "--check"]))?;
    util::run(util::cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    // The workspace run checks the bare-metal crates only as host no-ops; check their real code too.
    for package in [HV_PACKAGE, GUESTS_PACKAGE] {
        util::run(util::cargo().args(["clippy", "-p", package, "--target", HV_TARGET, "--", "-D", "warnings"]))?;
    }
    Ok(())
}
