//! Checksums: HASH and OPTS HASH (draft-bryan-ftpext-hash-02), RANG (draft-bryan-ftp-range-09),
//! the XSHA256/XSHA512/XSHA1/XMD5/XCRC aliases (GlobalSCAPE's XCRC, ProFTPD's mod_digest), MD5
//! and MMD5 (draft-twine-ftpmd5-00).
//!
//! Replies, and what they follow:
//! - `HASH path` -> `213 SHA-256 0-99 <lowercase hex> path`: the selected algorithm, the byte
//!   range hashed (first and last byte, both included), the digest, and the path as sent (hash
//!   draft 3). An empty file has no last byte; its range is written `0-0` (the grammar wants
//!   two numbers, end >= start), as mod_digest does. A directory is 553, a missing or
//!   unreadable file 550 (hash draft 3.5), a RANG range not inside the file 501.
//! - `OPTS HASH` -> `200 SHA-256`; `OPTS HASH name` -> `200 name` and selects it; an unknown
//!   name is 501 and changes nothing (hash draft 3.2).
//! - `RANG start end` -> `350 Restarting at <start>. End Byte range at <end>` (range draft 3
//!   and its example); `RANG 1 0` resets to the whole file. Both offsets are included: `RANG 0
//!   0` is the first byte. A start beyond the end is refused with 501 by the parser.
//! - `XSHA256|XSHA512|XSHA1|XMD5|XCRC path [start end]` -> `250 <UPPERCASE HEX>` (GlobalSCAPE:
//!   `250 <XCRC>`; mod_digest ends its reply with the same line, in uppercase). CRC-32 is 8
//!   digits. The offsets are read as mod_digest reads them: start included, end excluded, so
//!   `XCRC f 0 10` covers the first 10 bytes and the end may be the file size. An end beyond
//!   the file is 501 (mod_digest); a directory, missing or unreadable file 550.
//! - `MD5 path` -> `251 path HEX`; `MMD5 a, b` -> `252 a HEX, b HEX` (draft-twine 3.1, 3.2;
//!   252 also for a single name, as Apache FtpServer answers). A directory is 504; a missing
//!   file 550; one bad name fails the whole MMD5 with no digests.
//!
//! RANG selects a range for HASH only; RETR and STOR ignore it. FEAT therefore does not list
//! `RANG STREAM`, which promises ranged transfers (range draft 3.1, 4.3). The range is used by
//! the next HASH whatever its outcome, like REST by the next transfer: the range draft has the
//! client send RANG right before the command it is for, and a range left over from an earlier
//! HASH must not silently narrow a later one.

use std::io;

use ferry_proto::HashAlgorithm;

use super::storage;
use crate::checksum;
use crate::session::Session;
use crate::storage::{Storage, StorageError, VirtualPath};

/// The RANG arguments that reset the range (range draft 3).
const RANG_RESET: (u64, u64) = (1, 0);

/// The algorithm-specific verbs, each a FEAT line of its own as deployed servers list them.
const ALIASES: [&str; 7] = ["MD5", "MMD5", "XCRC", "XMD5", "XSHA1", "XSHA256", "XSHA512"];

/// Which bytes of a file a request names, before the file's size is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Span {
    /// The whole file.
    Whole,
    /// RANG: first and last byte, both included.
    Inclusive(u64, u64),
    /// X* offsets: start included, end excluded.
    Exclusive(u64, u64),
}

/// The bytes to hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Extent {
    /// Offset of the first byte.
    start: u64,
    /// How many bytes.
    len: u64,
}

impl Span {
    /// The extent inside a file of `size` bytes; `None` when the span does not fit in it.
    fn within(self, size: u64) -> Option<Extent> {
        match self {
            Span::Whole => Some(Extent {
                start: 0,
                len: size,
            }),
            Span::Inclusive(start, end) => (start <= end && end < size).then(|| Extent {
                start,
                len: end - start + 1,
            }),
            Span::Exclusive(start, end) => (start <= end && end <= size).then(|| Extent {
                start,
                len: end - start,
            }),
        }
    }

    /// How the span reads in an error reply.
    fn describe(self) -> String {
        match self {
            Span::Whole => "the whole file".to_string(),
            Span::Inclusive(start, end) => format!("bytes {start}-{end}"),
            Span::Exclusive(start, end) => format!("bytes {start} up to {end}"),
        }
    }
}

impl Extent {
    /// The last byte as the HASH reply writes it (`0` for an empty file).
    fn last(self) -> u64 {
        self.start + self.len.saturating_sub(1)
    }
}

/// Why no digest came out; each command answers these with its own codes.
#[derive(Debug)]
enum Failure {
    /// The storage refused or failed: answered by [`Session::storage_error`].
    Storage(StorageError),
    /// A directory has no digest.
    Directory,
    /// The span does not lie inside the file: 501.
    OutOfRange {
        /// What was asked for.
        span: Span,
        /// The file's size.
        size: u64,
    },
}

/// FEAT lines for the checksum commands: HASH with every algorithm, the selected one marked
/// with `*` (hash draft 3.1), and the aliases.
pub(super) fn feat_lines(s: &Session) -> Vec<String> {
    let algorithms: Vec<String> = HashAlgorithm::ALL
        .iter()
        .map(|&a| {
            if a == s.hash_algorithm {
                format!("{}*", a.name())
            } else {
                a.name().to_string()
            }
        })
        .collect();
    let mut lines = vec![format!("HASH {}", algorithms.join(";"))];
    lines.extend(ALIASES.iter().map(|alias| alias.to_string()));
    lines
}

/// OPTS HASH: `value` is the requested algorithm (upper-cased), empty for a query.
pub(super) async fn opts(s: &mut Session, value: &str) -> io::Result<()> {
    if value.is_empty() {
        let name = s.hash_algorithm.name();
        return s.reply(200, name).await;
    }
    match HashAlgorithm::from_name(value) {
        Some(algorithm) => {
            s.hash_algorithm = algorithm;
            s.reply(200, algorithm.name()).await
        }
        None => {
            s.reply(501, "Unknown algorithm, current selection not changed")
                .await
        }
    }
}

/// HASH: the selected algorithm over the file, or over the range the previous RANG set.
pub(super) async fn hash(s: &mut Session, arg: &str) -> io::Result<()> {
    let span = s
        .hash_range
        .take()
        .map_or(Span::Whole, |(start, end)| Span::Inclusive(start, end));
    let Some(storage) = storage(s).await? else {
        return Ok(());
    };
    let algorithm = s.hash_algorithm;
    match compute(&*storage, &s.resolve(arg), span, algorithm).await {
        Ok((extent, digest)) => {
            let text = format!(
                "{} {}-{} {} {arg}",
                algorithm.name(),
                extent.start,
                extent.last(),
                ferry_proto::digest::hex(&digest)
            );
            s.reply(213, text).await
        }
        Err(failure) => refuse(s, failure, 553, arg).await,
    }
}

/// RANG: remembers the range for the next HASH, or forgets it on `RANG 1 0`.
pub(super) async fn rang(s: &mut Session, start: u64, end: u64) -> io::Result<()> {
    if (start, end) == RANG_RESET {
        s.hash_range = None;
        return s.reply(350, "Range reset: HASH covers whole files").await;
    }
    s.hash_range = Some((start, end));
    s.reply(
        350,
        format!("Restarting at {start}. End Byte range at {end}"),
    )
    .await
}

/// XSHA256, XSHA512, XSHA1, XMD5, XCRC: one algorithm each, optional `start end` offsets.
pub(super) async fn xhash(
    s: &mut Session,
    algorithm: HashAlgorithm,
    arg: &str,
    range: Option<(u64, u64)>,
) -> io::Result<()> {
    let span = range.map_or(Span::Whole, |(start, end)| Span::Exclusive(start, end));
    let Some(storage) = storage(s).await? else {
        return Ok(());
    };
    match compute(&*storage, &s.resolve(unquote(arg)), span, algorithm).await {
        Ok((_, digest)) => s.reply(250, upper_hex(&digest)).await,
        Err(failure) => refuse(s, failure, 550, arg).await,
    }
}

/// MD5: the MD5 of a whole file.
pub(super) async fn md5(s: &mut Session, arg: &str) -> io::Result<()> {
    let Some(storage) = storage(s).await? else {
        return Ok(());
    };
    let path = s.resolve(unquote(arg));
    match compute(&*storage, &path, Span::Whole, HashAlgorithm::Md5).await {
        Ok((_, digest)) => s.reply(251, format!("{arg} {}", upper_hex(&digest))).await,
        Err(failure) => refuse(s, failure, 504, arg).await,
    }
}

/// MMD5: the MD5 of each comma-separated file.
pub(super) async fn mmd5(s: &mut Session, args: &str) -> io::Result<()> {
    let Some(storage) = storage(s).await? else {
        return Ok(());
    };
    let mut groups = Vec::new();
    for name in split_names(args) {
        let path = s.resolve(unquote(name));
        match compute(&*storage, &path, Span::Whole, HashAlgorithm::Md5).await {
            Ok((_, digest)) => groups.push(format!("{name} {}", upper_hex(&digest))),
            Err(failure) => return refuse(s, failure, 504, name).await,
        }
    }
    s.reply(252, groups.join(", ")).await
}

/// Digests `span` of the file at `path`, streaming it through the storage layer.
async fn compute(
    storage: &dyn Storage,
    path: &VirtualPath,
    span: Span,
    algorithm: HashAlgorithm,
) -> Result<(Extent, Vec<u8>), Failure> {
    let metadata = storage.metadata(path).await.map_err(Failure::Storage)?;
    if metadata.is_dir {
        return Err(Failure::Directory);
    }
    let extent = span.within(metadata.len).ok_or(Failure::OutOfRange {
        span,
        size: metadata.len,
    })?;
    let reader = storage
        .read(path, extent.start)
        .await
        .map_err(Failure::Storage)?;
    let digest = checksum::digest(reader.into_reader(), extent.len, algorithm)
        .await
        .map_err(|err| Failure::Storage(err.into()))?;
    Ok((extent, digest))
}

/// Answers a failed request; `directory_code` is what this command answers for a directory.
async fn refuse(
    s: &mut Session,
    failure: Failure,
    directory_code: u16,
    name: &str,
) -> io::Result<()> {
    match failure {
        Failure::Storage(err) => s.storage_error(err).await,
        Failure::Directory => {
            s.reply(directory_code, format!("{name}: Not a regular file"))
                .await
        }
        Failure::OutOfRange { span, size } => {
            let text = format!(
                "{name}: {} is not inside the file ({size} bytes)",
                span.describe()
            );
            s.reply(501, text).await
        }
    }
}

/// Uppercase hexadecimal, as mod_digest's X* replies and draft-twine's MD5 replies print it.
fn upper_hex(digest: &[u8]) -> String {
    ferry_proto::digest::hex(digest).to_ascii_uppercase()
}

/// The legacy commands' documentation shows names in double quotes (GlobalSCAPE's XCRC,
/// draft-twine's MD5); one enclosing pair is removed before the name is resolved.
fn unquote(name: &str) -> &str {
    name.strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
        .unwrap_or(name)
}

/// MMD5's names: separated by commas outside double quotes, surrounding spaces trimmed.
fn split_names(args: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in args.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                names.push(args[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    names.push(args[start..].trim());
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rang_offsets_include_both_ends() {
        let ten = 10;
        assert_eq!(
            Span::Inclusive(0, 0).within(ten),
            Some(Extent { start: 0, len: 1 })
        );
        assert_eq!(
            Span::Inclusive(3, 9).within(ten),
            Some(Extent { start: 3, len: 7 })
        );
        assert_eq!(Span::Inclusive(3, 10).within(ten), None);
        assert_eq!(Span::Inclusive(0, u64::MAX).within(ten), None);
        assert_eq!(Span::Inclusive(0, 0).within(0), None);
    }

    #[test]
    fn x_offsets_exclude_the_end() {
        let ten = 10;
        assert_eq!(
            Span::Exclusive(0, 10).within(ten),
            Some(Extent { start: 0, len: 10 })
        );
        assert_eq!(
            Span::Exclusive(4, 4).within(ten),
            Some(Extent { start: 4, len: 0 })
        );
        assert_eq!(Span::Exclusive(0, 11).within(ten), None);
        assert_eq!(Span::Whole.within(0), Some(Extent { start: 0, len: 0 }));
    }

    #[test]
    fn hash_reply_ranges_end_at_the_last_byte() {
        assert_eq!(Extent { start: 0, len: 100 }.last(), 99);
        assert_eq!(Extent { start: 5, len: 1 }.last(), 5);
        assert_eq!(Extent { start: 0, len: 0 }.last(), 0);
    }

    #[test]
    fn names_lose_one_pair_of_enclosing_quotes() {
        assert_eq!(unquote("\"a b.txt\""), "a b.txt");
        assert_eq!(unquote("plain"), "plain");
        assert_eq!(unquote("\""), "\"");
        assert_eq!(unquote("\"half"), "\"half");
    }

    #[test]
    fn mmd5_names_split_on_commas_outside_quotes() {
        assert_eq!(split_names("a"), ["a"]);
        assert_eq!(split_names("a, b ,c"), ["a", "b", "c"]);
        assert_eq!(
            split_names("x.txt, \"../d/A, B.txt\""),
            ["x.txt", "\"../d/A, B.txt\""]
        );
    }
}
