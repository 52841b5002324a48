//! A trivial guest that prints and succeeds: run beside a crashing or busy domain to show it is unaffected.
#![cfg_attr(target_os = "none", no_std, no_main)]

xtf::guest!(test_main);

fn test_main() -> xtf::TestResult {
    xtf::println!("sched_second: running beside the other domain");
    Ok(())
}
