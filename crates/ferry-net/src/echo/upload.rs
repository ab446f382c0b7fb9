//! Uploads inside one frame: header `{"cmd":"put","filename":...,"md5":...}` (plus the body
//! size field of the format) and the file as the body. The server keeps only a plain file
//! name, checks the optional md5, writes a hidden temporary sibling and renames it into place,
//! so a failed upload never leaves a half-written file under the real name.

use std::io;
use std::path::Path;

use bytes::Bytes;
use md5::{Digest, Md5};
use serde_json::{Map, Value};

use crate::frame::Frame;

/// The `cmd` of an upload frame.
pub const PUT: &str = "put";

/// Why an upload was refused; the message goes back to the client in an error frame.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The server was started without an upload directory.
    #[error("uploads are disabled on this server (no upload directory)")]
    Disabled,
    /// The header has no `filename` string.
    #[error("a put frame needs a \"filename\" string")]
    MissingFilename,
    /// The name is not a plain file name (separators, `..`, hidden, empty, control bytes).
    #[error("refused file name {0:?}: only a plain, non-hidden file name is allowed")]
    BadFilename(String),
    /// The `md5` field is not 32 hex digits.
    #[error("the md5 field must be 32 hex digits")]
    BadMd5,
    /// The body does not hash to the `md5` the header names (damaged in transit).
    #[error("md5 mismatch: the header says {expected}, the body hashes to {actual}")]
    Md5Mismatch {
        /// From the header.
        expected: String,
        /// Of the body received.
        actual: String,
    },
    /// Writing the file failed on our side.
    #[error("cannot save the file: {0}")]
    Io(#[from] io::Error),
}

/// Lowercase hex MD5 of `bytes`, as `hashlib.md5(b).hexdigest()` prints it.
pub fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Accepts `name` only if it is a plain file name that cannot leave the upload directory or
/// hide in it.
pub fn check_filename(name: &str) -> Result<&str, UploadError> {
    let bad = name.is_empty()
        || name.starts_with('.')
        || name.len() > 255
        || name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control());
    if bad {
        Err(UploadError::BadFilename(name.to_owned()))
    } else {
        Ok(name)
    }
}

/// The upload frame for `body` under `filename`, with its md5.
pub fn put_frame(filename: &str, body: impl Into<Bytes>) -> Frame {
    let body = body.into();
    let mut header = Map::new();
    header.insert("cmd".into(), Value::from(PUT));
    header.insert("filename".into(), Value::from(filename));
    header.insert("md5".into(), Value::from(md5_hex(&body)));
    Frame { header, body }
}

/// The success reply: `{"status":"ok","filename":...,"bytes":N}`. The count is not called
/// `size` because in the standard format `size` is the length of the frame's own body.
pub fn saved_frame(filename: &str, bytes: u64) -> Frame {
    let mut header = Map::new();
    header.insert("status".into(), Value::from("ok"));
    header.insert("filename".into(), Value::from(filename));
    header.insert("bytes".into(), Value::from(bytes));
    Frame::header_only(header)
}

/// Checks and saves an upload frame under `dir`; returns the file name and its size.
pub async fn save(dir: Option<&Path>, frame: &Frame) -> Result<(String, u64), UploadError> {
    let dir = dir.ok_or(UploadError::Disabled)?;
    let name = check_filename(
        frame
            .str_field("filename")
            .ok_or(UploadError::MissingFilename)?,
    )?;
    if let Some(expected) = frame.header.get("md5") {
        let expected = expected
            .as_str()
            .filter(|s| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or(UploadError::BadMd5)?
            .to_ascii_lowercase();
        let actual = md5_hex(&frame.body);
        if expected != actual {
            return Err(UploadError::Md5Mismatch { expected, actual });
        }
    }
    // Names starting with '.' are refused above, so no client can address the temporary file.
    let temp = dir.join(format!(".{name}.part-{:016x}", rand::random::<u64>()));
    let written = match tokio::fs::write(&temp, &frame.body).await {
        Ok(()) => tokio::fs::rename(&temp, dir.join(name)).await,
        Err(err) => Err(err),
    };
    if let Err(err) = written {
        let _ = tokio::fs::remove_file(&temp).await;
        return Err(err.into());
    }
    Ok((name.to_owned(), frame.body.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_file_names_pass_and_escapes_or_hidden_names_do_not() {
        for ok in ["a.txt", "report 2024.pdf", "ü.bin", "a..b"] {
            assert!(check_filename(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "../x",
            "a/b",
            "/etc/passwd",
            "a\\b",
            "nul\0",
            "tab\t",
        ] {
            assert!(check_filename(bad).is_err(), "{bad:?}");
        }
        assert!(check_filename(&"x".repeat(256)).is_err());
    }

    #[test]
    fn md5_hex_matches_the_rfc_1321_test_vector() {
        assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
    }

    #[tokio::test]
    async fn an_upload_lands_under_its_name_with_no_temporary_left() {
        let dir = tempfile::tempdir().unwrap();
        let frame = put_frame("a.txt", &b"hello"[..]);
        let (name, size) = save(Some(dir.path()), &frame).await.unwrap();
        assert_eq!((name.as_str(), size), ("a.txt", 5));
        assert_eq!(std::fs::read(dir.path().join("a.txt")).unwrap(), b"hello");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn a_wrong_md5_saves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut frame = put_frame("a.txt", &b"hello"[..]);
        frame
            .header
            .insert("md5".into(), Value::from("0".repeat(32)));
        assert!(matches!(
            save(Some(dir.path()), &frame).await,
            Err(UploadError::Md5Mismatch { .. })
        ));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn without_an_upload_directory_uploads_are_refused() {
        let frame = put_frame("a.txt", &b"x"[..]);
        assert!(matches!(
            save(None, &frame).await,
            Err(UploadError::Disabled)
        ));
    }
}
