//! `cargo xtask qemu-defect`: runs the reproducer of the QEMU TCG defect that docs/testing.md describes ("A QEMU
//! defect") and says whether this host's QEMU has it, so that the Linux boot tests' one repeat (tests/tests/linux.rs)
//! can go once QEMU is fixed. Each run boots Keel with the `fxrstor_race` test guest (2 vCPUs on `-smp 2`, 20 s of
//! FXRSTOR and CPUID loops); `--without-fxrstor` runs the control, which has no FXRSTOR and should never fail.

use crate::util::{self, Result};
use crate::{build, ElfArg};
use keel_tests::xtf::{self, Module};

#[derive(clap::Args)]
pub struct Args {
    /// Boots to run.
    #[arg(long, default_value_t = 5)]
    runs: u32,
    /// The control: the same loops without FXRSTOR.
    #[arg(long)]
    without_fxrstor: bool,
    #[command(flatten)]
    elf: ElfArg,
}

pub fn cmd(args: &Args) -> Result<()> {
    let elf = args.elf.get()?;
    let guests = build::guests()?;
    std::env::set_var("KEEL_ELF", &elf);
    std::env::set_var("KEEL_GUESTS", &guests);
    let module_args = format!("vcpus=2 guest.fxrstor={}", u8::from(!args.without_fxrstor));
    let mut hit = 0;
    for i in 1..=args.runs {
        let run = xtf::boot(&[Module::new("fxrstor_race", "race", &module_args)], 2, 120);
        let outcome = match run.emulator_defect() {
            Some(why) => {
                hit += 1;
                why
            }
            None => match xtf::xtf_result(&run.log, "race") {
                Some("SUCCESS") => "no defect seen".to_string(),
                other => format!("ended otherwise ({other:?}), not by the defect"),
            },
        };
        eprintln!("qemu-defect: run {i}/{}: {:.1} s: {outcome}", args.runs, run.elapsed.as_secs_f64());
    }
    let what = if args.without_fxrstor { "the control (no FXRSTOR)" } else { "the reproducer" };
    eprintln!(
        "qemu-defect: the defect ended {what} in {hit} of {} runs under {}",
        args.runs,
        util::output(std::process::Command::new("qemu-system-x86_64").arg("--version"))
            .map(|v| v.lines().next().unwrap_or("").to_string())
            .unwrap_or_else(|_| "qemu-system-x86_64 (version unknown)".into())
    );
    Ok(())
}
