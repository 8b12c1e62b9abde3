//! One file per subcommand.

pub mod gradcheck;
