//! Property tests of the key parser, bounded (the fuzz target in `fuzz/` runs it
//! unbounded): every format reads back the key it wrote, and no input panics.
//!
//! The inputs come from a seed that the figure prints; `IROH_IDENTITY_SEED=N` replays it.

use std::collections::BTreeMap;

use iroh_identity::{decode_key, encode_key};

use super::{figure, size};
use crate::support::{ALL_FORMATS, Rng};

#[test]
fn every_format_reads_back_the_key_it_wrote() {
    let keys = size(2_000, 200_000);
    let (mut rng, seed) = Rng::from_env_or_random("IROH_IDENTITY_SEED");
    for _ in 0..keys {
        let key = rng.key();
        for format in ALL_FORMATS {
            let encoded = encode_key(&key, format);
            let (decoded, read_as) = decode_key(&encoded).unwrap_or_else(|problem| {
                panic!("seed {seed}: {format} does not read back: {problem}")
            });
            assert_eq!(read_as, format, "seed {seed}");
            assert_eq!(decoded.to_bytes(), key.to_bytes(), "seed {seed}: {format}");
        }
    }
    figure(
        "property round trip",
        format_args!(
            "seed {seed}: {keys} keys × {} formats, all read back",
            ALL_FORMATS.len()
        ),
    );
}

/// One way to spoil a valid key file.
fn mutate(rng: &mut Rng, mut bytes: Vec<u8>) -> Vec<u8> {
    for _ in 0..=rng.below(3) {
        let at = rng.below(bytes.len().max(1));
        match rng.below(6) {
            0 if !bytes.is_empty() => bytes[at] ^= 1 << rng.below(8),
            1 => bytes.truncate(at),
            2 => bytes.insert(at.min(bytes.len()), rng.bytes(1)[0]),
            3 if !bytes.is_empty() => {
                bytes.remove(at);
            }
            4 => bytes.insert(at.min(bytes.len()), b"\n \r\t"[rng.below(4)]),
            _ => {
                let end = (at + rng.below(16)).min(bytes.len());
                let noise = rng.bytes(end - at);
                bytes[at..end].copy_from_slice(&noise);
            }
        }
    }
    bytes
}

#[test]
fn arbitrary_and_mutated_bytes_never_panic() {
    let inputs = size(20_000, 2_000_000);
    let (mut rng, seed) = Rng::from_env_or_random("IROH_IDENTITY_SEED");
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..inputs {
        let input = match rng.below(3) {
            0 => {
                let len = rng.below(200);
                rng.bytes(len)
            }
            _ => {
                let key = rng.key();
                let valid = encode_key(&key, ALL_FORMATS[rng.below(ALL_FORMATS.len())]);
                mutate(&mut rng, valid.to_vec())
            }
        };
        let outcome = std::panic::catch_unwind(|| decode_key(&input))
            .unwrap_or_else(|_| panic!("seed {seed}: decode_key panicked on {input:02x?}"));
        let name = match outcome {
            Ok((_, format)) => format!("read as {format}"),
            Err(problem) => {
                let problem = format!("{problem:?}");
                problem
                    .split([' ', '{', '('])
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            }
        };
        *outcomes.entry(name).or_default() += 1;
    }
    figure(
        "property no panic",
        format_args!("seed {seed}: {inputs} inputs, 0 panics; outcomes {outcomes:?}"),
    );
}
