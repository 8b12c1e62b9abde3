//! One file per subcommand.

pub mod eval;
pub mod gradcheck;
pub mod sample;
pub mod train;
