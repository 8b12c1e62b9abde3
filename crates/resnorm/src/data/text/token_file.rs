//! Pre-tokenized data files in the two formats of the GPT-2 training world.
//!
//! - [`TokenFileFormat::RawU16`], nanoGPT's `train.bin` / `val.bin`: nothing but the token ids
//!   as little-endian `uint16`, so the file length is twice the token count.
//! - [`TokenFileFormat::LlmcShard`], llm.c's shards: a header of 256 little-endian `int32`
//!   (`[0]` = magic [`LLMC_MAGIC`] = 20240520, `[1]` = version 1, `[2]` = token count, the
//!   rest zero), then exactly that many little-endian `uint16` tokens.
//!
//! Both use the extension `.bin`, so [`read_token_file`] decides by content: a file at least
//! one header long whose first `int32` is the magic is a shard, anything else raw. (A raw
//! file could only be mistaken for a shard if it began with the tokens 54728, 308, and
//! 54728 is outside GPT-2's vocabulary; [`read_token_file_as`] forces a format.)
//!
//! ```
//! use resnorm::data::text::{read_token_file, write_token_file, TokenFileFormat};
//! let path = std::env::temp_dir().join(format!("resnorm-tokens-doc-{}.bin", std::process::id()));
//! write_token_file(&path, &[15496, 995], TokenFileFormat::LlmcShard).unwrap();
//! let file = read_token_file(&path).unwrap();
//! assert_eq!(file.format, TokenFileFormat::LlmcShard);
//! assert_eq!(file.tokens, vec![15496, 995]);
//! std::fs::remove_file(&path).unwrap();
//! ```

use std::path::Path;

use crate::{Error, Result};

/// First `int32` of an llm.c shard.
pub const LLMC_MAGIC: i32 = 20240520;
/// The llm.c shard version with `uint16` tokens (version 2 holds `uint32` Llama-3 tokens).
pub const LLMC_VERSION: i32 = 1;
/// Number of `int32` words in an llm.c shard header.
pub const LLMC_HEADER_INTS: usize = 256;
const LLMC_HEADER_BYTES: usize = LLMC_HEADER_INTS * 4;

/// The layout of a token file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenFileFormat {
    /// nanoGPT: little-endian `uint16` tokens, no header.
    RawU16,
    /// llm.c: 1024-byte header (magic, version, count), then little-endian `uint16` tokens.
    LlmcShard,
}

impl TokenFileFormat {
    /// The format `bytes` are in: a shard if they start with a full header carrying
    /// [`LLMC_MAGIC`], raw otherwise.
    pub fn detect(bytes: &[u8]) -> TokenFileFormat {
        if bytes.len() >= LLMC_HEADER_BYTES && header_int(bytes, 0) == LLMC_MAGIC {
            TokenFileFormat::LlmcShard
        } else {
            TokenFileFormat::RawU16
        }
    }
}

/// Tokens read from a file, and the format they were found in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenFile {
    /// The layout the file had.
    pub format: TokenFileFormat,
    /// The token ids, in file order.
    pub tokens: Vec<u32>,
}

/// Reads a token file, detecting its format with [`TokenFileFormat::detect`].
pub fn read_token_file(path: &Path) -> Result<TokenFile> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let format = TokenFileFormat::detect(&bytes);
    decode(path, &bytes, format)
}

/// Reads a token file that must be in `format`.
pub fn read_token_file_as(path: &Path, format: TokenFileFormat) -> Result<TokenFile> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode(path, &bytes, format)
}

/// Writes `tokens` to `path` in `format`. Every token must fit in `uint16`.
pub fn write_token_file(path: &Path, tokens: &[u32], format: TokenFileFormat) -> Result<()> {
    if let Some(i) = tokens.iter().position(|&t| t > u32::from(u16::MAX)) {
        return Err(Error::invalid(
            "write_token_file",
            format!("token {} at index {i} does not fit in uint16", tokens[i]),
        ));
    }
    let mut bytes = Vec::with_capacity(LLMC_HEADER_BYTES + 2 * tokens.len());
    if format == TokenFileFormat::LlmcShard {
        let count = i32::try_from(tokens.len()).map_err(|_| {
            Error::invalid(
                "write_token_file",
                format!(
                    "{} tokens exceed an llm.c shard's int32 count",
                    tokens.len()
                ),
            )
        })?;
        let mut header = [0i32; LLMC_HEADER_INTS];
        header[0] = LLMC_MAGIC;
        header[1] = LLMC_VERSION;
        header[2] = count;
        bytes.extend(header.iter().flat_map(|v| v.to_le_bytes()));
    }
    bytes.extend(tokens.iter().flat_map(|&t| (t as u16).to_le_bytes()));
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// The `index`-th little-endian `int32` of `bytes` (which must hold it).
fn header_int(bytes: &[u8], index: usize) -> i32 {
    let at = 4 * index;
    i32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn decode(path: &Path, bytes: &[u8], format: TokenFileFormat) -> Result<TokenFile> {
    let bad = |detail: String| Error::Format {
        path: path.to_path_buf(),
        detail,
    };
    let body = match format {
        TokenFileFormat::RawU16 => {
            if !bytes.len().is_multiple_of(2) {
                return Err(bad(format!(
                    "raw uint16 token file has an odd length of {} bytes",
                    bytes.len()
                )));
            }
            bytes
        }
        TokenFileFormat::LlmcShard => {
            if bytes.len() < LLMC_HEADER_BYTES {
                return Err(bad(format!(
                    "{} bytes are too short for an llm.c shard header of {LLMC_HEADER_BYTES} bytes",
                    bytes.len()
                )));
            }
            let magic = header_int(bytes, 0);
            if magic != LLMC_MAGIC {
                return Err(bad(format!(
                    "llm.c shard magic is {magic}, expected {LLMC_MAGIC}"
                )));
            }
            let version = header_int(bytes, 1);
            if version != LLMC_VERSION {
                return Err(bad(format!(
                    "llm.c shard version {version} is not supported (only {LLMC_VERSION}, uint16 tokens)"
                )));
            }
            let count = header_int(bytes, 2);
            let body = &bytes[LLMC_HEADER_BYTES..];
            let expected = usize::try_from(count).map_err(|_| {
                bad(format!(
                    "llm.c shard header has a negative token count {count}"
                ))
            })?;
            if body.len() != 2 * expected {
                let problem = if body.len() < 2 * expected {
                    "truncated"
                } else {
                    "too long"
                };
                return Err(bad(format!(
                    "llm.c shard is {problem}: header says {expected} tokens ({} bytes), body has {} bytes",
                    2 * expected,
                    body.len()
                )));
            }
            body
        }
    };
    if body.is_empty() {
        return Err(bad("token file holds no tokens".into()));
    }
    let tokens = body
        .chunks_exact(2)
        .map(|pair| u32::from(u16::from_le_bytes([pair[0], pair[1]])))
        .collect();
    Ok(TokenFile { format, tokens })
}
