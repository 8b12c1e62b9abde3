//! The machine's side of the memory checks: every command that allocates from sizes given
//! in flags or files compares the library's estimate ([`resnorm::memory`]) with the memory
//! available here before it allocates, and refuses with one line instead of letting the
//! allocator abort the process.

use resnorm::memory::{gib, MemoryEstimate};
use resnorm::{Error, Result};

/// Refuses `estimate` for `what` (e.g. "training") when it exceeds the available memory.
/// Where that memory is unknown (no `/proc/meminfo`: not Linux), only the overflow checks
/// that produced `estimate` apply.
pub fn check_fits(what: &str, estimate: &MemoryEstimate) -> Result<()> {
    match available_bytes() {
        Some(available) if estimate.total_bytes() > available => Err(Error::Config(format!(
            "{what} needs {estimate}, more than the {} of memory available on this machine",
            gib(available)
        ))),
        _ => Ok(()),
    }
}

/// `MemAvailable` from `/proc/meminfo` (or `MemTotal` on kernels without it), in bytes.
fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kib| kib.trim().parse::<u64>().ok())
            .map(|kib| kib.saturating_mul(1024))
    };
    field("MemAvailable").or_else(|| field("MemTotal"))
}
