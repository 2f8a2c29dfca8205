//! Mutation fuzzing on stable Rust: damaged variants of valid inputs (bit flips, truncations,
//! splices of another input, random bytes, insertions, deletions) fed to a parser under
//! `catch_unwind`, counting rejections, panics and the slowest input. The test suites of the
//! parsers use it (config, demonstrations, checkpoints); it is not used by the product.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use rand::{Rng, RngExt};

/// What a fuzzing run saw.
#[derive(Clone, Debug, Default)]
pub struct FuzzStats {
    /// Inputs tried.
    pub inputs: u64,
    /// Inputs the parser refused with an error.
    pub rejected: u64,
    /// Inputs that panicked (must be 0), with the first one's message.
    pub panics: u64,
    pub first_panic: Option<String>,
    /// Errors that did not say what they were asked to (e.g. name the file), with the first.
    pub unnamed: u64,
    pub first_unnamed: Option<String>,
    /// The slowest input.
    pub slowest: Duration,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl FuzzStats {
    /// Prints the run's line and asserts what every parser's fuzzing demands: no panic, every
    /// refusal named, no input slower than 2 s, and most mutants refused (so the mutations
    /// reached the parser's checks). For test suites, which is why it panics.
    pub fn print_and_check(&self, name: &str) {
        println!(
            "fuzz {name}: {} inputs, {} refused, {} panics, {} refusals not naming the file, slowest {:?}, {:.1} s",
            self.inputs,
            self.rejected,
            self.panics,
            self.unnamed,
            self.slowest,
            self.elapsed.as_secs_f64()
        );
        assert_eq!(self.panics, 0, "{name}: {:?}", self.first_panic);
        assert_eq!(self.unnamed, 0, "{name}: {:?}", self.first_unnamed);
        assert!(
            self.slowest < Duration::from_secs(2),
            "{name}: {:?}",
            self.slowest
        );
        assert!(
            self.rejected > self.inputs / 2,
            "{name}: mutants mostly refused"
        );
    }
}

/// One damaged variant of `seeds[k]` for a random `k` (another seed may be spliced in).
pub fn mutate<R: Rng + ?Sized>(seeds: &[Vec<u8>], rng: &mut R) -> Vec<u8> {
    let mut v = seeds[rng.random_range(0..seeds.len())].clone();
    let rounds = 1 + rng.random_range(0..4u32);
    for _ in 0..rounds {
        // Half the edits fall in the first 4 KiB, where the headers and metadata are.
        let span = if rng.random_bool(0.5) {
            v.len().min(4096)
        } else {
            v.len()
        };
        let at = if span == 0 {
            0
        } else {
            rng.random_range(0..span)
        };
        match rng.random_range(0..7u32) {
            0 if !v.is_empty() => v[at] ^= 1 << rng.random_range(0..8u32),
            1 => v.truncate(at),
            2 if !v.is_empty() => v[at] = rng.random(),
            3 => {
                let n = rng.random_range(1..16usize);
                let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                v.splice(at..at, bytes);
            }
            4 if at < v.len() => {
                let end = (at + rng.random_range(1..64usize)).min(v.len());
                v.drain(at..end);
            }
            5 => {
                let other = &seeds[rng.random_range(0..seeds.len())];
                if !other.is_empty() {
                    let from = rng.random_range(0..other.len());
                    let end = (from + rng.random_range(1..256usize)).min(other.len());
                    let cut = (at + (end - from)).min(v.len());
                    v.splice(at..cut, other[from..end].iter().copied());
                }
            }
            _ if !v.is_empty() => {
                // An interesting value: ASCII digits, quotes, brackets, 0xFF runs.
                const TOKENS: &[&[u8]] = &[
                    b"0",
                    b"-1",
                    b"1e999",
                    b"nan",
                    b"\"",
                    b"[",
                    b"]",
                    b"{",
                    b"}",
                    b"=",
                    b"\n",
                    b"18446744073709551615",
                    b"\xff\xff\xff\xff",
                    b"\x00",
                ];
                let t = TOKENS[rng.random_range(0..TOKENS.len())];
                let end = (at + t.len()).min(v.len());
                v.splice(at..end, t.iter().copied());
            }
            _ => {}
        }
    }
    v
}

/// Feeds `n` mutants of `seeds` to `parse` under `catch_unwind`. `parse` returns Ok(()) for an
/// accepted input, Err(message) for a refusal; `named` says whether a refusal's message says
/// what it must (the file and the problem). A long run (over 100,000 inputs) prints its
/// counts to stderr at every tenth, so an interrupted run still says how far it got.
pub fn fuzz(
    seeds: &[Vec<u8>],
    n: u64,
    seed: u64,
    mut parse: impl FnMut(&[u8]) -> Result<(), String>,
    named: impl Fn(&str) -> bool,
) -> FuzzStats {
    let mut rng = crate::seed::rng(seed, 0xF022);
    let mut stats = FuzzStats::default();
    let start = Instant::now();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for k in 0..n {
        if n > 100_000 && k > 0 && k % (n / 10) == 0 {
            eprintln!(
                "fuzz: {k} of {n} inputs, {} refused, {} panics, {} refusals not named, slowest {:?}, {:.0} s",
                stats.rejected,
                stats.panics,
                stats.unnamed,
                stats.slowest,
                start.elapsed().as_secs_f64()
            );
        }
        let input = mutate(seeds, &mut rng);
        let t = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| parse(&input)));
        stats.slowest = stats.slowest.max(t.elapsed());
        stats.inputs += 1;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => {
                stats.rejected += 1;
                if !named(&msg) {
                    stats.unnamed += 1;
                    stats.first_unnamed.get_or_insert(msg);
                }
            }
            Err(p) => {
                stats.panics += 1;
                stats
                    .first_panic
                    .get_or_insert_with(|| crate::panic_message(p.as_ref()));
            }
        }
    }
    std::panic::set_hook(hook);
    stats.elapsed = start.elapsed();
    stats
}
