//! One file per subcommand.

pub mod bench;
pub mod gradcheck;
pub mod study;
