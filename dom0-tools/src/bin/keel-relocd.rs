//! keel-relocd: the migration receiver, Xen's xend relocation server with an authenticated, encrypted channel
//! (see `dom0_tools::relocd`). `keel-relocd` serves (when `xend-relocation-server` is `yes`); `--generate-psk`
//! makes the hosts' shared key; `--receive` is what the daemon runs for each connection it accepts (the
//! connection is its standard input).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use dom0_tools::relocd::{self, Settings};

#[derive(Parser)]
#[command(name = "keel-relocd", about = "Keel's migration receiver (xend's relocation server)")]
struct Args {
    /// xend's settings file.
    #[arg(long, default_value = relocd::CONFIG_PATH)]
    config: PathBuf,
    /// Write a new relocation key to the file the settings name (xend-relocation-psk-file), then exit.
    #[arg(long)]
    generate_psk: bool,
    /// Receive one migration on standard input (run by the daemon for each connection).
    #[arg(long, hide = true)]
    receive: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let settings = match Settings::load(&args.config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("keel-relocd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = if args.generate_psk {
        relocd::generate_psk(&settings.psk_file)
            .map(|()| println!("wrote a new key to {}", settings.psk_file.display()))
    } else if args.receive {
        receive(&settings)
    } else if !settings.server {
        Err(format!("xend-relocation-server is not 'yes' in {}: not serving", args.config.display()))
    } else {
        std::env::current_exe()
            .map_err(|e| format!("cannot find my own program: {e}"))
            .and_then(|exe| relocd::serve(&settings, &args.config, &exe))
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keel-relocd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One migration, on the connection that is standard input.
fn receive(settings: &Settings) -> Result<(), String> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let psk = relocd::load_psk(&settings.psk_file)?;
    // SAFETY: the daemon gives this process the accepted connection as descriptor 0, owned by nothing else here.
    let stream = std::net::TcpStream::from(unsafe { OwnedFd::from_raw_fd(0) });
    dom0_tools::xm::migrate::receive(stream, &psk)
}
