//! HMAC challenge-response, sans I/O: the server sends a random 32-byte challenge, the client
//! answers HMAC(key, challenge), the server compares in constant time. The key never travels,
//! and an old answer is useless because every challenge is new. Optionally mutual: the client
//! then challenges the server the same way.
//!
//! HMAC-SHA256 by default; HMAC-MD5 (16-byte answers) is what the classic tutorial programs
//! use (`hmac.new(key, msg, 'md5').digest()`), kept for interoperating with them.
//!
//! States are types that consume themselves (as rustls does): a server can only verify after
//! it challenged, and only once.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use md5::Md5;
use sha2::Sha256;

/// Bytes in a challenge.
pub const CHALLENGE_LEN: usize = 32;

/// The HMAC hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// HMAC-SHA256, 32-byte answers (default).
    Sha256,
    /// HMAC-MD5, 16-byte answers (the classic programs).
    Md5,
}

impl Algorithm {
    /// Length of an answer.
    pub fn answer_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 32,
            Algorithm::Md5 => 16,
        }
    }
}

/// A shared secret; Debug never shows it.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl Key {
    /// Wraps key bytes (a secret file's contents, trailing newline removed by the caller).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Key(bytes.into())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(********)")
    }
}

/// Why a handshake failed, and whose fault it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The peer's answer has the wrong length (peer misbehaved or uses another algorithm).
    #[error("answer of {got} bytes, expected {expected}")]
    WrongLength {
        /// Expected length.
        expected: usize,
        /// Received length.
        got: usize,
    },
    /// The answer does not match: the peer does not hold the key (or replayed an old answer).
    #[error("the peer does not hold the shared key")]
    WrongAnswer,
    /// A challenge of the wrong length arrived (peer misbehaved).
    #[error("challenge of {0} bytes, expected {CHALLENGE_LEN}")]
    BadChallenge(usize),
}

/// The answer to `challenge` under `key`.
pub fn answer(key: &Key, algorithm: Algorithm, challenge: &[u8]) -> Vec<u8> {
    match algorithm {
        Algorithm::Sha256 => mac::<Hmac<Sha256>>(key, challenge)
            .finalize()
            .into_bytes()
            .to_vec(),
        Algorithm::Md5 => mac::<Hmac<Md5>>(key, challenge)
            .finalize()
            .into_bytes()
            .to_vec(),
    }
}

fn mac<M: Mac + KeyInit>(key: &Key, message: &[u8]) -> M {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <M as KeyInit>::new_from_slice(&key.0)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(message);
    mac
}

/// Checks `got` against the answer to `challenge` in constant time (the `subtle` comparison
/// inside the hmac crate), so timing reveals nothing about how much of it was right.
fn check(
    key: &Key,
    algorithm: Algorithm,
    challenge: &[u8],
    got: &[u8],
) -> Result<(), HandshakeError> {
    let expected = algorithm.answer_len();
    if got.len() != expected {
        return Err(HandshakeError::WrongLength {
            expected,
            got: got.len(),
        });
    }
    let ok = match algorithm {
        Algorithm::Sha256 => mac::<Hmac<Sha256>>(key, challenge)
            .verify_slice(got)
            .is_ok(),
        Algorithm::Md5 => mac::<Hmac<Md5>>(key, challenge).verify_slice(got).is_ok(),
    };
    if ok {
        Ok(())
    } else {
        Err(HandshakeError::WrongAnswer)
    }
}

/// A fresh random challenge.
pub fn new_challenge() -> [u8; CHALLENGE_LEN] {
    rand::random()
}

/// The side that checks: first state.
#[derive(Debug)]
pub struct Challenger {
    key: Key,
    algorithm: Algorithm,
}

/// The side that checks, after sending its challenge.
#[derive(Debug)]
pub struct AwaitingAnswer {
    key: Key,
    algorithm: Algorithm,
    challenge: [u8; CHALLENGE_LEN],
}

/// A peer that proved it holds the key; in mutual mode it may now be challenged back.
#[derive(Debug)]
pub struct Verified {
    key: Key,
    algorithm: Algorithm,
}

impl Challenger {
    /// A checker for `key`.
    pub fn new(key: Key, algorithm: Algorithm) -> Self {
        Challenger { key, algorithm }
    }

    /// Issues a random challenge: send these bytes to the peer.
    pub fn challenge(self) -> (AwaitingAnswer, [u8; CHALLENGE_LEN]) {
        self.challenge_with(new_challenge())
    }

    /// Issues a given challenge (tests; a real server uses [`Challenger::challenge`]).
    pub fn challenge_with(
        self,
        challenge: [u8; CHALLENGE_LEN],
    ) -> (AwaitingAnswer, [u8; CHALLENGE_LEN]) {
        (
            AwaitingAnswer {
                key: self.key,
                algorithm: self.algorithm,
                challenge,
            },
            challenge,
        )
    }
}

impl AwaitingAnswer {
    /// Bytes of the answer this side waits for (read exactly this many).
    pub fn answer_len(&self) -> usize {
        self.algorithm.answer_len()
    }

    /// Checks the peer's answer; on failure the caller closes the connection.
    pub fn verify(self, got: &[u8]) -> Result<Verified, HandshakeError> {
        check(&self.key, self.algorithm, &self.challenge, got)?;
        Ok(Verified {
            key: self.key,
            algorithm: self.algorithm,
        })
    }
}

impl Verified {
    /// Mutual mode: answers the peer's challenge so it can check us in turn.
    pub fn answer_back(&self, challenge: &[u8]) -> Result<Vec<u8>, HandshakeError> {
        if challenge.len() != CHALLENGE_LEN {
            return Err(HandshakeError::BadChallenge(challenge.len()));
        }
        Ok(answer(&self.key, self.algorithm, challenge))
    }
}

/// The side that proves: answers a challenge, and in mutual mode checks the answer back.
#[derive(Debug)]
pub struct Prover {
    key: Key,
    algorithm: Algorithm,
}

impl Prover {
    /// A prover holding `key`.
    pub fn new(key: Key, algorithm: Algorithm) -> Self {
        Prover { key, algorithm }
    }

    /// The answer to the peer's challenge.
    pub fn respond(&self, challenge: &[u8]) -> Result<Vec<u8>, HandshakeError> {
        if challenge.len() != CHALLENGE_LEN {
            return Err(HandshakeError::BadChallenge(challenge.len()));
        }
        Ok(answer(&self.key, self.algorithm, challenge))
    }

    /// Mutual mode: challenges the peer back.
    pub fn challenge_back(self) -> (AwaitingAnswer, [u8; CHALLENGE_LEN]) {
        Challenger::new(self.key, self.algorithm).challenge()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Key {
        Key::new(s.as_bytes())
    }

    #[test]
    fn the_right_key_passes_for_both_algorithms() {
        for algorithm in [Algorithm::Sha256, Algorithm::Md5] {
            let (waiting, challenge) = Challenger::new(key("k"), algorithm).challenge();
            let reply = Prover::new(key("k"), algorithm)
                .respond(&challenge)
                .unwrap();
            assert_eq!(reply.len(), algorithm.answer_len());
            assert!(waiting.verify(&reply).is_ok());
        }
    }

    #[test]
    fn a_wrong_key_fails() {
        let (waiting, challenge) = Challenger::new(key("k"), Algorithm::Sha256).challenge();
        let reply = Prover::new(key("other"), Algorithm::Sha256)
            .respond(&challenge)
            .unwrap();
        assert_eq!(
            waiting.verify(&reply).unwrap_err(),
            HandshakeError::WrongAnswer
        );
    }

    #[test]
    fn no_answer_and_a_short_answer_fail() {
        let (waiting, _) = Challenger::new(key("k"), Algorithm::Sha256).challenge();
        assert_eq!(
            waiting.verify(&[]).unwrap_err(),
            HandshakeError::WrongLength {
                expected: 32,
                got: 0
            }
        );
        let (waiting, challenge) = Challenger::new(key("k"), Algorithm::Sha256).challenge();
        let reply = Prover::new(key("k"), Algorithm::Sha256)
            .respond(&challenge)
            .unwrap();
        assert!(matches!(
            waiting.verify(&reply[..31]),
            Err(HandshakeError::WrongLength { .. })
        ));
    }

    #[test]
    fn a_replayed_old_answer_fails_against_a_new_challenge() {
        let prover = Prover::new(key("k"), Algorithm::Sha256);
        let (first, challenge) = Challenger::new(key("k"), Algorithm::Sha256).challenge();
        let old = prover.respond(&challenge).unwrap();
        assert!(first.verify(&old).is_ok());
        let (second, _) = Challenger::new(key("k"), Algorithm::Sha256).challenge();
        assert_eq!(
            second.verify(&old).unwrap_err(),
            HandshakeError::WrongAnswer
        );
    }

    #[test]
    fn hmac_md5_matches_the_rfc_2202_test_vector() {
        // RFC 2202 test case 2: key "Jefe", data "what do ya want for nothing?".
        let got = answer(
            &key("Jefe"),
            Algorithm::Md5,
            b"what do ya want for nothing?",
        );
        let hex: String = got.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "750c783e6ab0b503eaa86e310a5db738");
    }

    #[test]
    fn mutual_mode_checks_both_sides() {
        let (server_waits, challenge) = Challenger::new(key("k"), Algorithm::Sha256).challenge();
        let client = Prover::new(key("k"), Algorithm::Sha256);
        let verified = server_waits
            .verify(&client.respond(&challenge).unwrap())
            .unwrap();
        let (client_waits, back) = client.challenge_back();
        assert!(
            client_waits
                .verify(&verified.answer_back(&back).unwrap())
                .is_ok()
        );
    }

    #[test]
    fn the_key_is_never_printed() {
        assert_eq!(format!("{:?}", key("secret")), "Key(********)");
    }
}
