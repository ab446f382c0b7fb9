//! The HMAC challenge-response in `ferry_net::handshake`, fed arbitrary peer messages.
//!
//! Asserts, for both algorithms: a challenger accepts an answer exactly when it equals
//! HMAC(key, challenge) computed by an independent RFC 2104 implementation, and reports the
//! wrong length before looking at the bytes; an honest prover with another key passes only if
//! that key is the same HMAC key (zero-padded to the same block); a prover of the other
//! algorithm always fails on length; both sides refuse challenges that are not 32 bytes and
//! answer the others with the reference HMAC.

#![no_main]

use arbitrary::Arbitrary;
use ferry_fuzz::{hmac_key_block, reference_hmac};
use ferry_net::handshake::{
    Algorithm, AwaitingAnswer, CHALLENGE_LEN, Challenger, HandshakeError, Key, Prover,
};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    md5: bool,
    key: Vec<u8>,
    /// The key an honest peer holds, often not ours.
    peer_key: Vec<u8>,
    challenge: [u8; CHALLENGE_LEN],
    /// Whatever a peer sends back as its answer.
    answer: Vec<u8>,
    /// Whatever a peer sends as its own challenge.
    peer_challenge: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let algorithm = if input.md5 {
        Algorithm::Md5
    } else {
        Algorithm::Sha256
    };
    let other = if input.md5 {
        Algorithm::Sha256
    } else {
        Algorithm::Md5
    };
    let expected = reference_hmac(input.md5, &input.key, &input.challenge);
    let challenger = || Challenger::new(Key::new(input.key.clone()), algorithm);

    // Any bytes from the peer.
    let verdict = waiting(challenger(), input.challenge).verify(&input.answer);
    check_verdict(verdict.as_ref().err(), &input.answer, &expected);

    // The right answer with one byte changed.
    if let Some(first) = input.answer.first() {
        let mut forged = expected.clone();
        let at = usize::from(*first) % forged.len();
        forged[at] ^= first | 1;
        let verdict = waiting(challenger(), input.challenge).verify(&forged);
        assert_eq!(verdict.err(), Some(HandshakeError::WrongAnswer));
    }

    // An honest peer holding `peer_key`.
    let prover = Prover::new(Key::new(input.peer_key.clone()), algorithm);
    let response = prover.respond(&input.challenge);
    assert_eq!(
        response.as_deref().ok(),
        Some(&reference_hmac(input.md5, &input.peer_key, &input.challenge)[..])
    );
    let same_key =
        hmac_key_block(input.md5, &input.key) == hmac_key_block(input.md5, &input.peer_key);
    let verdict = waiting(challenger(), input.challenge).verify(&response.unwrap_or_default());
    assert_eq!(verdict.is_ok(), same_key, "{:?}", verdict.err());

    // An honest peer of the other algorithm.
    let mismatched = Prover::new(Key::new(input.key.clone()), other).respond(&input.challenge);
    let verdict = waiting(challenger(), input.challenge).verify(&mismatched.unwrap_or_default());
    assert!(matches!(verdict, Err(HandshakeError::WrongLength { .. })));

    // The peer's own challenge, to the prover and (mutual mode) to the verified side.
    let proved = prover.respond(&input.peer_challenge);
    check_challenge_answer(proved, &input.peer_key, input.md5, &input.peer_challenge);
    let Ok(verified) = waiting(challenger(), input.challenge).verify(&expected) else {
        panic!("the reference answer was refused");
    };
    let back = verified.answer_back(&input.peer_challenge);
    check_challenge_answer(back, &input.key, input.md5, &input.peer_challenge);
});

fn waiting(challenger: Challenger, challenge: [u8; CHALLENGE_LEN]) -> AwaitingAnswer {
    challenger.challenge_with(challenge).0
}

fn check_verdict(error: Option<&HandshakeError>, got: &[u8], expected: &[u8]) {
    match error {
        None => assert_eq!(got, expected, "accepted an answer that is not the HMAC"),
        Some(HandshakeError::WrongLength {
            expected: len,
            got: n,
        }) => {
            assert_eq!((*len, *n), (expected.len(), got.len()));
            assert_ne!(got.len(), expected.len());
        }
        Some(HandshakeError::WrongAnswer) => {
            assert_eq!(got.len(), expected.len());
            assert_ne!(got, expected, "refused the right answer");
        }
        Some(other) => panic!("verify failed with {other:?}"),
    }
}

fn check_challenge_answer(
    result: Result<Vec<u8>, HandshakeError>,
    key: &[u8],
    md5: bool,
    challenge: &[u8],
) {
    if challenge.len() == CHALLENGE_LEN {
        assert_eq!(result, Ok(reference_hmac(md5, key, challenge)));
    } else {
        assert_eq!(result, Err(HandshakeError::BadChallenge(challenge.len())));
    }
}
