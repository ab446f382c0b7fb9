//! What the fuzz targets share: cutting a byte stream into reads the way a socket might, a
//! driver that feeds those reads to a tokio-util decoder as `Framed` does, and reference
//! implementations the targets check ferry against.

use bytes::BytesMut;
use md5::Md5;
use sha2::{Digest, Sha256};
use tokio_util::codec::Decoder;

/// FNV-1a: a cheap, stable hash so each input picks its own read sizes without spending
/// fuzzer bytes on them (the FTP seeds stay valid inputs as they are).
pub fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Three ways the same bytes may arrive: in one read, one byte per read, and in reads of
/// 1..=64 bytes chosen by a generator seeded with `seed`.
pub fn chunkings(data: &[u8], seed: u64) -> [Vec<&[u8]>; 3] {
    let whole = vec![data];
    let bytewise = data.chunks(1).collect();
    let mut state = seed | 1;
    let mut rest = data;
    let mut seeded = Vec::new();
    while !rest.is_empty() {
        // xorshift64: any sequence will do, it only has to differ between inputs.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let take = usize::try_from(state % 64)
            .map_or(1, |n| n + 1)
            .min(rest.len());
        let (chunk, tail) = rest.split_at(take);
        seeded.push(chunk);
        rest = tail;
    }
    [whole, bytewise, seeded]
}

/// What a decoder made of a stream: every item in order, then the error that ended it.
#[derive(Debug)]
pub struct Decoded<T, E> {
    /// The items decoded before the stream ended or failed.
    pub items: Vec<T>,
    /// The error that stopped decoding; `Framed` would end the stream here.
    pub error: Option<E>,
}

/// Feeds `reads` to `codec` as `Framed` does: after each read, decode until it needs more;
/// at the end, `decode_eof` until it has nothing left. Stops at the first error.
pub fn decode_stream<D: Decoder>(mut codec: D, reads: &[&[u8]]) -> Decoded<D::Item, D::Error> {
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    for read in reads {
        buf.extend_from_slice(read);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => break,
                Err(err) => {
                    return Decoded {
                        items,
                        error: Some(err),
                    };
                }
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(item)) => items.push(item),
            Ok(None) => return Decoded { items, error: None },
            Err(err) => {
                return Decoded {
                    items,
                    error: Some(err),
                };
            }
        }
    }
}

/// The argument part of `line` when it starts with one of `verbs` (any case), else all of
/// it: seeds like `PORT 127,0,0,1,4,1` then feed the argument to every verb a target tries.
pub fn argument<'a>(line: &'a str, verbs: &[&str]) -> &'a str {
    match line.split_once(' ') {
        Some((verb, arg)) if verbs.iter().any(|v| v.eq_ignore_ascii_case(verb)) => arg,
        _ => line,
    }
}

/// HMAC (RFC 2104) written out from its definition, to check ferry's handshake against an
/// implementation it does not share. `md5` picks HMAC-MD5, else HMAC-SHA256.
pub fn reference_hmac(md5: bool, key: &[u8], message: &[u8]) -> Vec<u8> {
    let block = hmac_key_block(md5, key);
    let inner_key: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let outer_key: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner = hash(md5, &[&inner_key, message]);
    hash(md5, &[&outer_key, &inner])
}

/// The 64-byte block HMAC really keys with: a long key is hashed first, a short one is padded
/// with zeros. Two keys with the same block are the same key to HMAC (`k` and `k\0` are).
pub fn hmac_key_block(md5: bool, key: &[u8]) -> [u8; 64] {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        let digest = hash(md5, &[key]);
        block[..digest.len()].copy_from_slice(&digest);
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    block
}

fn hash(md5: bool, parts: &[&[u8]]) -> Vec<u8> {
    if md5 {
        let mut hasher = Md5::new();
        parts.iter().for_each(|part| hasher.update(part));
        hasher.finalize().to_vec()
    } else {
        let mut hasher = Sha256::new();
        parts.iter().for_each(|part| hasher.update(part));
        hasher.finalize().to_vec()
    }
}
