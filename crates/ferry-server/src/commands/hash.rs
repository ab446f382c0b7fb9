//! Checksums: HASH and OPTS HASH (draft-bryan-ftpext-hash-02), RANG (draft-bryan-ftp-range),
//! the XSHA256/XSHA512/XSHA1/XMD5/XCRC aliases, MD5 and MMD5 (draft-twine-ftpmd5).

use std::io;

use ferry_proto::HashAlgorithm;

use crate::session::Session;

/// FEAT lines for the checksum commands.
pub(super) fn feat_lines(_s: &Session) -> Vec<String> {
    Vec::new()
}

pub(super) async fn opts(s: &mut Session, _value: &str) -> io::Result<()> {
    s.reply(502, "HASH not implemented yet").await
}

pub(super) async fn hash(s: &mut Session, _path: &str) -> io::Result<()> {
    s.reply(502, "HASH not implemented yet").await
}

pub(super) async fn rang(s: &mut Session, _start: u64, _end: u64) -> io::Result<()> {
    s.reply(502, "RANG not implemented yet").await
}

pub(super) async fn xhash(
    s: &mut Session,
    _algorithm: HashAlgorithm,
    _path: &str,
    _range: Option<(u64, u64)>,
) -> io::Result<()> {
    s.reply(502, "not implemented yet").await
}

pub(super) async fn md5(s: &mut Session, _path: &str) -> io::Result<()> {
    s.reply(502, "MD5 not implemented yet").await
}

pub(super) async fn mmd5(s: &mut Session, _paths: &str) -> io::Result<()> {
    s.reply(502, "MMD5 not implemented yet").await
}
