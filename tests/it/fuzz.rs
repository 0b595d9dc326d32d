//! The fuzz targets on stable (`tollgate::fuzz_targets`): every input of `fuzz/corpus/<target>`
//! and, for each, deterministic mutations of it (bit flips, cut-offs, insertions of bytes that
//! parsers care about, splices with other entries). A panic is a failure. `scripts/fuzz.sh` runs
//! the same targets under libFuzzer where the nightly toolchain is present.

use std::path::Path;

/// Bytes the parsers give meaning to.
const INTERESTING: &[&[u8]] = &[
    b"%",
    b"%2e",
    b"%2F",
    b"/",
    b"//",
    b"..",
    b".",
    b"\\",
    b"\0",
    b"\r\n",
    b"?",
    b"#",
    b"=",
    b"&",
    b",",
    b"{",
    b"}",
    b"[",
    b"\"",
    b":",
    b"@",
    b"1e300",
    b"-1",
    b"\xff",
    b"\xc3\xa9",
];

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{target} has no corpus");
    inputs
}

struct Mutator(u64);

impl Mutator {
    fn next(&mut self, bound: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        usize::try_from(self.0 >> 33).unwrap() % bound.max(1)
    }

    fn mutate(&mut self, input: &[u8], other: &[u8]) -> Vec<u8> {
        let mut output = input.to_vec();
        for _ in 0..=self.next(4) {
            let at = self.next(output.len() + 1);
            match self.next(5) {
                0 if !output.is_empty() => {
                    let index = at.min(output.len() - 1);
                    output[index] ^= 1 << self.next(8);
                }
                1 => output.truncate(at),
                2 => {
                    let piece = INTERESTING[self.next(INTERESTING.len())];
                    output.splice(at..at, piece.iter().copied());
                }
                3 => {
                    let from = self.next(other.len() + 1);
                    output.splice(at..at, other[from..].iter().copied());
                }
                _ => {
                    let end = (at + self.next(8)).min(output.len());
                    output.drain(at..end);
                }
            }
        }
        output
    }
}

#[test]
fn every_fuzz_target_survives_its_corpus_and_mutations_of_it() {
    const MUTATIONS_PER_INPUT: usize = 2000;
    for (name, target) in tollgate::fuzz_targets::TARGETS {
        let inputs = corpus(name);
        let mut mutator = Mutator(0x5eed ^ name.len() as u64);
        let mut runs = 0usize;
        for (index, input) in inputs.iter().enumerate() {
            target(input);
            let other = &inputs[(index + 1) % inputs.len()];
            for _ in 0..MUTATIONS_PER_INPUT {
                let mutated = mutator.mutate(input, other);
                let outcome = std::panic::catch_unwind(|| target(&mutated));
                assert!(
                    outcome.is_ok(),
                    "{name} panicked on {:?}",
                    String::from_utf8_lossy(&mutated)
                );
                runs += 1;
            }
        }
        eprintln!(
            "fuzz target {name}: {} corpus inputs, {runs} mutations",
            inputs.len()
        );
    }
}
