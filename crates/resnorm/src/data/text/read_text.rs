//! Reading training text: one UTF-8 file, or a folder of them.
//!
//! A folder is read as the concatenation of the regular files directly inside it (no
//! recursion, names starting with `.` skipped), in byte order of their file names, joined
//! by a single `"\n"`. Every file must be nonempty. [`read_text`] also needs valid UTF-8
//! and names an invalid file together with the byte offset of its first invalid byte;
//! [`read_bytes`], for the byte tokenizer, takes any bytes.
//!
//! ```
//! let dir = std::env::temp_dir().join(format!("resnorm-text-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! std::fs::write(dir.join("b.txt"), "second").unwrap();
//! std::fs::write(dir.join("a.txt"), "first").unwrap();
//! assert_eq!(resnorm::data::text::read_text(&dir).unwrap(), "first\nsecond");
//! std::fs::write(dir.join("c.bin"), b"caf\xE9").unwrap();
//! assert!(resnorm::data::text::read_text(&dir).is_err());
//! assert_eq!(resnorm::data::text::read_bytes(&dir).unwrap(), b"first\nsecond\ncaf\xE9");
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Reads `path` as text: a file's contents, or a folder's files joined as described in the
/// module documentation.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = read_joined(path, |file, bytes| {
        utf8_checked(file, bytes).map(String::into_bytes)
    })?;
    // Valid UTF-8 pieces joined by "\n" are valid UTF-8.
    utf8_checked(path, bytes)
}

/// Reads `path` as bytes, UTF-8 or not: a file's contents, or a folder's files joined as
/// described in the module documentation.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    read_joined(path, |_, bytes| Ok(bytes))
}

/// A file's bytes, or a folder's files' bytes joined by `\n`, each file passed through
/// `check` first.
fn read_joined(path: &Path, check: impl Fn(&Path, Vec<u8>) -> Result<Vec<u8>>) -> Result<Vec<u8>> {
    let metadata = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !metadata.is_dir() {
        return check(path, read_file(path)?);
    }
    let files = text_files_in(path)?;
    let mut joined = Vec::new();
    for (i, file) in files.iter().enumerate() {
        if i > 0 {
            joined.push(b'\n');
        }
        joined.extend(check(file, read_file(file)?)?);
    }
    Ok(joined)
}

/// The regular, non-hidden files directly inside `dir`, sorted by file name.
fn text_files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let hidden = entry.file_name().as_encoded_bytes().starts_with(b".");
        if !hidden && path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(Error::Format {
            path: dir.to_path_buf(),
            detail: "folder holds no text files".into(),
        });
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// One nonempty file's bytes.
fn read_file(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.is_empty() {
        return Err(Error::Format {
            path: path.to_path_buf(),
            detail: "file is empty".into(),
        });
    }
    Ok(bytes)
}

/// `bytes` as a `String`, or an error naming `path` and the first invalid byte.
fn utf8_checked(path: &Path, bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        Error::Format {
            path: path.to_path_buf(),
            detail: format!(
                "not valid UTF-8: byte 0x{:02X} at byte offset {offset}",
                e.as_bytes()[offset]
            ),
        }
    })
}
