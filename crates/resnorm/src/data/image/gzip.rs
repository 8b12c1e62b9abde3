//! Reading a file that may be gzip-compressed, decided by its first two bytes (`1f 8b`), not
//! by its name.

use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The file's bytes, decompressed when they start with the gzip magic.
pub(crate) fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    let mut bytes = Vec::new();
    flate2::read::MultiGzDecoder::new(&raw[..])
        .read_to_end(&mut bytes)
        .map_err(|e| Error::Format {
            path: path.to_path_buf(),
            detail: format!("broken gzip stream: {e}"),
        })?;
    Ok(bytes)
}
