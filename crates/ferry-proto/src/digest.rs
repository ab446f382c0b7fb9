//! Digests for the HASH family (SHA-256, SHA-512, SHA-1, MD5, CRC-32), shared by the server
//! (answering HASH) and the client (verifying a transfer against it).

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

use crate::HashAlgorithm;

/// A running digest of one algorithm.
#[derive(Debug)]
#[allow(missing_docs)]
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
    Sha1(Sha1),
    Md5(Md5),
    Crc32(crc32fast::Hasher),
}

impl Hasher {
    /// A fresh digest.
    pub fn new(algorithm: HashAlgorithm) -> Self {
        match algorithm {
            HashAlgorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            HashAlgorithm::Sha512 => Hasher::Sha512(Sha512::new()),
            HashAlgorithm::Sha1 => Hasher::Sha1(Sha1::new()),
            HashAlgorithm::Md5 => Hasher::Md5(Md5::new()),
            HashAlgorithm::Crc32 => Hasher::Crc32(crc32fast::Hasher::new()),
        }
    }

    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
            Hasher::Sha1(h) => h.update(bytes),
            Hasher::Md5(h) => h.update(bytes),
            Hasher::Crc32(h) => h.update(bytes),
        }
    }

    /// The digest bytes; CRC-32 as its four big-endian bytes, so it prints as 8 hex digits.
    pub fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Md5(h) => h.finalize().to_vec(),
            Hasher::Crc32(h) => h.finalize().to_be_bytes().to_vec(),
        }
    }
}

/// Lowercase hexadecimal, two digits per byte.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(algorithm: HashAlgorithm, input: &[u8]) -> String {
        let mut h = Hasher::new(algorithm);
        h.update(input);
        hex(&h.finish())
    }

    #[test]
    fn known_answers() {
        assert_eq!(
            digest(HashAlgorithm::Sha256, b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            digest(HashAlgorithm::Md5, b"abc"),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!(digest(HashAlgorithm::Crc32, b"abc"), "352441c2");
    }
}
