//! One file per subcommand.

pub mod bench;
pub mod classify;
pub mod eval;
pub mod export;
pub mod gradcheck;
pub mod ranks;
pub mod run_dir;
pub mod sample;
pub mod study;
pub mod study_translation;
pub mod train;
pub mod translate;
pub mod vision;
