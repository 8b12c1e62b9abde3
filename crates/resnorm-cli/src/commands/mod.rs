//! One file per subcommand.

pub mod gradcheck;
pub mod vision;
