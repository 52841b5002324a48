//! The `xm` command handlers: one function per command of the table.
//!
//! Each receives its already parsed and validated arguments. None is
//! implemented yet (the hypervisor interfaces they need do not exist), so
//! each reports [`XmError::NotAvailable`]; the issue that implements a
//! command replaces its body here.

use super::cmdtable::{
    CreateArgs, DmesgArgs, DomainArg, DomainsArg, DomidArgs, DomnameArgs, DumpCoreArgs, ListArgs, MemSetArgs,
    MigrateArgs, RenameArgs, RestoreArgs, SaveArgs, SchedCreditArgs, ShutdownArgs, SysrqArgs, UptimeArgs, VcpuPinArgs,
    VcpuSetArgs, VnetListArgs,
};
use super::XmError;

/// The result of a command handler.
pub type CmdResult = Result<(), XmError>;

/// `xm console <Domain>`
pub fn console(_args: &DomainArg) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm create <ConfigFile> [-c] [-p] [vars]`
pub fn create(_args: &CreateArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm destroy <Domain>`
pub fn destroy(_args: &DomainArg) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm domid <DomainName>`
pub fn domid(_args: &DomidArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm domname <DomainId>`
pub fn domname(_args: &DomnameArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm dump-core [-L] [-C] <Domain> [Filename]`
pub fn dump_core(_args: &DumpCoreArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm list [-l] [Domain...]`
pub fn list(_args: &ListArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm mem-set <Domain> <Mem>`
pub fn mem_set(_args: &MemSetArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm migrate [-l] <Domain> <Host>`
pub fn migrate(_args: &MigrateArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm pause <Domain>`
pub fn pause(_args: &DomainArg) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm reboot [-w] (-a | <Domain>)`
pub fn reboot(_args: &ShutdownArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm rename <Domain> <NewName>`
pub fn rename(_args: &RenameArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm restore <CheckpointFile>`
pub fn restore(_args: &RestoreArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm save <Domain> <CheckpointFile>`
pub fn save(_args: &SaveArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm shutdown [-w] (-a | <Domain>)`
pub fn shutdown(_args: &ShutdownArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm sysrq <Domain> <letter>`
pub fn sysrq(_args: &SysrqArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm top`
pub fn top() -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm unpause <Domain>`
pub fn unpause(_args: &DomainArg) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm uptime [-s] [Domain...]`
pub fn uptime(_args: &UptimeArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm vcpu-list [Domain...]`
pub fn vcpu_list(_args: &DomainsArg) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm vcpu-pin <Domain> <VCPU|all> <CPUs|all>`
pub fn vcpu_pin(_args: &VcpuPinArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm vcpu-set <Domain> <vCPUs>`
pub fn vcpu_set(_args: &VcpuSetArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm dmesg [-c]`
pub fn dmesg(_args: &DmesgArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm info`
pub fn info() -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm log`
pub fn log() -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm sched-credit [-d <Domain> [-w WEIGHT] [-c CAP]]`
pub fn sched_credit(_args: &SchedCreditArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm vnet-list [-l]`
pub fn vnet_list(_args: &VnetListArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}
