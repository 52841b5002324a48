//! `xm`: Keel's domain management command. See [`dom0_tools::xm`].

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(dom0_tools::xm::main(std::env::args_os()))
}
