//! SIGINT (Ctrl-C) and SIGTERM (what Slurm and Kubernetes send before they kill a job) for
//! the trainers: the first one asks the training loop to stop after its current step, save
//! and exit with 128 + the signal (130, 143); a second one ends the process at once with the
//! same code. That is safe at any instant, because a checkpoint appears complete or not at
//! all (see `resnorm::checkpoint_set`): an interrupted save leaves the previous checkpoint.
//!
//! The handler only stores the signal's number in an atomic (or calls `_exit`, which is
//! async-signal-safe); the loop polls [`Stop::requested`] once per step.

use std::sync::atomic::{AtomicI32, Ordering};

/// The first signal received, 0 while none.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// SIGINT's number, the same on every platform.
const SIGINT: i32 = 2;

/// Asks a training loop to stop once its step is done.
pub struct Stop;

impl Stop {
    /// Installs the handlers for SIGINT and SIGTERM.
    pub fn install() -> resnorm::Result<Self> {
        install_handlers()
            .map_err(|e| resnorm::Error::invalid("train", format!("cannot catch signals: {e}")))?;
        Ok(Stop)
    }

    /// True once a signal has come.
    pub fn requested(&self) -> bool {
        RECEIVED.load(Ordering::SeqCst) != 0
    }

    /// The exit code for the signal that came: 128 + its number.
    pub fn exit_code(&self) -> u8 {
        (128 + RECEIVED.load(Ordering::SeqCst)).clamp(0, 255) as u8
    }

    /// The signal's name, for the closing line.
    pub fn name(&self) -> &'static str {
        match RECEIVED.load(Ordering::SeqCst) {
            SIGINT => "interrupted (SIGINT)",
            _ => "terminated (SIGTERM)",
        }
    }

    /// The closing line of a trainer stopped after `step`, its checkpoint in `out`.
    pub fn saved_line(&self, step: u64, out: &std::path::Path) -> String {
        format!(
            "{}: checkpoint of step {step} saved in {}; continue with --resume {}",
            self.name(),
            out.display(),
            out.display()
        )
    }
}

#[cfg(unix)]
extern "C" fn on_signal(signal: libc::c_int) {
    if RECEIVED.swap(signal, Ordering::SeqCst) != 0 {
        // SAFETY: `_exit` is async-signal-safe; nothing is flushed or unwound, and the last
        // checkpoint on disk is complete whatever was being written.
        unsafe { libc::_exit(128 + signal) }
    }
}

#[cfg(unix)]
fn install_handlers() -> std::io::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed `sigaction` is valid; the handler only touches an atomic or calls
        // `_exit`; SA_RESTART keeps file writes from failing with EINTR.
        let installed = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if installed != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Outside Unix, Ctrl-C only (there is no SIGTERM); a second one waits for the step.
#[cfg(not(unix))]
fn install_handlers() -> std::io::Result<()> {
    ctrlc::set_handler(|| RECEIVED.store(SIGINT, Ordering::SeqCst)).map_err(std::io::Error::other)
}
