//! A small deterministic fuzzer for the parsers at Cairn's boundaries (XML-RPC, host.toml, the
//! kernel's tc dumps), run as ordinary `#[test]`s.
//!
//! cargo-fuzz needs a nightly compiler and proptest a dependency tree of its own; what the
//! harnesses need is much less: a seeded generator, mutations of real inputs, a property
//! checked on each, and a small failing input when the property breaks. Everything here is a
//! pure function of the seed, so a failure in CI is reproduced by running the same test again.
//!
//! Budget: `CAIRN_FUZZ_ITERS` (inputs per harness) and `CAIRN_FUZZ_SEED` override the small
//! defaults each test passes, which is how ci/bench.d/fuzz.sh gives the same harnesses a longer
//! run.

pub mod actions;
pub mod fabricate;
pub mod value;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;
use std::time::{Duration, Instant};

pub use fabricate::fabricate;

/// SplitMix64: tiny, fast, and good enough to pick mutations; not for anything secret.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// True `num` times in `den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        den > 0 && self.next_u64() % den < num
    }

    /// One of `items`; `None` when there are none.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            items.get(self.below(items.len()))
        }
    }
}

/// How much one harness runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub iters: u64,
    pub seed: u64,
}

/// The seed every harness uses unless told otherwise: a fixed one, so CI runs the same inputs
/// every time and a failure there is a failure on every machine.
pub const DEFAULT_SEED: u64 = 0xCA1A_F022_2025_0001;

impl Budget {
    /// `default_iters` inputs from the default seed, unless `CAIRN_FUZZ_ITERS` or
    /// `CAIRN_FUZZ_SEED` say otherwise.
    pub fn from_env(default_iters: u64) -> Budget {
        Budget::from_env_var("CAIRN_FUZZ_ITERS", default_iters)
    }

    /// Like [`Budget::from_env`], with the count from `var`: a harness whose inputs cost a
    /// network round trip needs its own scale.
    pub fn from_env_var(var: &str, default_iters: u64) -> Budget {
        let number = |name: &str| {
            std::env::var(name).ok().and_then(|v| {
                let v = v.trim();
                match v.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16).ok(),
                    None => v.parse().ok(),
                }
            })
        };
        Budget {
            iters: number(var).unwrap_or(default_iters),
            seed: number("CAIRN_FUZZ_SEED").unwrap_or(DEFAULT_SEED),
        }
    }
}

/// What a harness did: printed by every run, so the bench can show throughput and how many
/// different answers the inputs reached (a rough measure of how far they got).
#[derive(Debug, Clone)]
pub struct Report {
    pub name: String,
    pub iters: u64,
    pub elapsed: Duration,
    /// How often each outcome came up, by the label the check gave it.
    pub outcomes: BTreeMap<String, u64>,
}

impl Report {
    pub fn per_second(&self) -> f64 {
        self.iters as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fuzz {}: {} inputs in {:.2} s ({:.0}/s), {} distinct outcomes",
            self.name,
            self.iters,
            self.elapsed.as_secs_f64(),
            self.per_second(),
            self.outcomes.len()
        )
    }
}

/// Something a harness feeds its target: it knows how to make smaller versions of itself, so a
/// failing input is cut down before it is reported.
pub trait Input: Clone + fmt::Debug {
    /// Smaller candidates, most aggressive first.
    fn shrink(&self) -> Vec<Self>;

    /// How a failure report shows the input.
    fn describe(&self) -> String {
        format!("{self:?}")
    }
}

impl Input for Vec<u8> {
    fn describe(&self) -> String {
        show_bytes(self)
    }

    fn shrink(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut chunk = self.len() / 2;
        while chunk > 0 {
            let mut at = 0;
            while at < self.len() {
                let mut c = self[..at].to_vec();
                c.extend_from_slice(self.get(at + chunk..).unwrap_or(&[]));
                out.push(c);
                at += chunk;
            }
            chunk /= 2;
        }
        out
    }
}

thread_local! {
    /// Set while this thread runs a target: its panics are expected findings, reported by the
    /// harness with the input, so the default hook's message (and backtrace note) is noise.
    static QUIET: Cell<bool> = const { Cell::new(false) };
    /// Where the last quiet panic happened, for the report.
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

fn install_quiet_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if QUIET.with(Cell::get) {
                let at = info
                    .location()
                    .map(|l| format!(" at {}:{}:{}", l.file(), l.line(), l.column()))
                    .unwrap_or_default();
                LAST_PANIC.with(|p| *p.borrow_mut() = at);
            } else {
                previous(info);
            }
        }));
    });
}

/// Why one input failed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// The target panicked (an index out of bounds, an overflow, an unwrap on input).
    Panic(String),
    /// The target returned, but a property the check asserts does not hold.
    Property(String),
}

impl Failure {
    fn same_kind(&self, other: &Failure) -> bool {
        matches!(
            (self, other),
            (Failure::Panic(_), Failure::Panic(_)) | (Failure::Property(_), Failure::Property(_))
        )
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Panic(m) => write!(f, "panicked: {m}"),
            Failure::Property(m) => write!(f, "property violated: {m}"),
        }
    }
}

fn attempt<I>(check: &impl Fn(&I) -> Result<String, String>, input: &I) -> Result<String, Failure> {
    QUIET.with(|q| q.set(true));
    let result = panic::catch_unwind(AssertUnwindSafe(|| check(input)));
    QUIET.with(|q| q.set(false));
    match result {
        Ok(Ok(label)) => Ok(label),
        Ok(Err(why)) => Err(Failure::Property(why)),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            let at = LAST_PANIC.with(|p| p.borrow().clone());
            Err(Failure::Panic(format!("{message}{at}")))
        }
    }
}

/// How many candidates a failing input may be tried against while it is cut down.
const SHRINK_ATTEMPTS: usize = 4000;

fn minimize<I: Input>(
    check: &impl Fn(&I) -> Result<String, String>,
    input: I,
    failure: Failure,
) -> (I, Failure) {
    let (mut current, mut failure) = (input, failure);
    let mut attempts = 0;
    'smaller: while attempts < SHRINK_ATTEMPTS {
        for candidate in current.shrink() {
            attempts += 1;
            if attempts > SHRINK_ATTEMPTS {
                break 'smaller;
            }
            if let Err(f) = attempt(check, &candidate)
                && f.same_kind(&failure)
            {
                current = candidate;
                failure = f;
                continue 'smaller;
            }
        }
        break;
    }
    (current, failure)
}

/// Runs `check` on every seed as it is, then on `budget.iters` mutants of them. `check` returns
/// a label for the outcome (counted in the report) or, when a property does not hold, why.
/// The first failure, panics included, is cut down to a small input and the test fails with
/// it; otherwise the report is printed to stderr and returned.
pub fn run<I: Input>(
    name: &str,
    budget: Budget,
    seeds: &[I],
    mutate: impl Fn(&mut Rng, &I) -> I,
    check: impl Fn(&I) -> Result<String, String>,
) -> Report {
    assert!(!seeds.is_empty(), "fuzz {name}: no seeds");
    install_quiet_hook();
    let mut rng = Rng::new(budget.seed);
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let started = Instant::now();
    let total = seeds.len() as u64 + budget.iters;
    for i in 0..total {
        let input = match usize::try_from(i).ok().and_then(|i| seeds.get(i)) {
            Some(seed) => seed.clone(),
            None => {
                let Some(seed) = rng.pick(seeds) else { break };
                mutate(&mut rng, seed)
            }
        };
        match attempt(&check, &input) {
            Ok(label) => *outcomes.entry(label).or_default() += 1,
            Err(failure) => {
                let what = if (i as usize) < seeds.len() {
                    format!("seed {i}")
                } else {
                    format!("input {i} (seed {:#x})", budget.seed)
                };
                let (small, failure) = minimize(&check, input.clone(), failure);
                panic!(
                    "fuzz {name}: {what} failed: {failure}\n\
                     minimized input: {}\n\
                     original input: {}\n\
                     (pin the minimized input as a regression test where the fix is)",
                    small.describe(),
                    input.describe()
                );
            }
        }
    }
    let report = Report {
        name: name.to_string(),
        iters: total,
        elapsed: started.elapsed(),
        outcomes,
    };
    eprintln!("{report}");
    report
}

/// Bytes the mutators insert or write over: markup, separators and numbers at the edges of
/// the integer types. Harnesses add the words of their own formats.
const INTERESTING_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "127",
    "128",
    "255",
    "256",
    "4094",
    "4095",
    "4096",
    "65535",
    "65536",
    "2147483647",
    "2147483648",
    "-2147483649",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "1e309",
    "0.5",
    "1.",
    ".5",
    "00",
    "+1",
];

const INTERESTING_U32: &[u32] = &[
    0,
    1,
    3,
    4,
    5,
    7,
    8,
    0x7F,
    0x80,
    0xFF,
    0x100,
    0x3FFF,
    0x4000,
    0x7FFF,
    0x8000,
    0xFFFF,
    0x1_0000,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFE,
    0xFFFF_FFFF,
];

/// Byte-level mutations of seed inputs, with a dictionary of tokens of the input's format.
#[derive(Debug, Clone)]
pub struct Mutator {
    corpus: Vec<Vec<u8>>,
    dictionary: Vec<Vec<u8>>,
    /// Longest input a mutation may produce: past a point, more bytes only cost time.
    pub max_len: usize,
}

impl Mutator {
    /// `corpus` is spliced into mutants; `dictionary` holds the format's own tokens.
    pub fn new(corpus: &[Vec<u8>], dictionary: &[&[u8]]) -> Mutator {
        let mut dictionary: Vec<Vec<u8>> = dictionary.iter().map(|t| t.to_vec()).collect();
        dictionary.extend(INTERESTING_NUMBERS.iter().map(|n| n.as_bytes().to_vec()));
        Mutator {
            corpus: corpus.to_vec(),
            dictionary,
            max_len: 64 << 10,
        }
    }

    /// Adds the words and tags found in the corpus to the dictionary (`lan`, `<member>`,
    /// `rate_bps`): mutants then mostly speak the format instead of random bytes.
    pub fn with_corpus_words(mut self) -> Mutator {
        let mut words = std::collections::BTreeSet::new();
        for entry in &self.corpus {
            let text = String::from_utf8_lossy(entry);
            let mut word = String::new();
            let mut tag: Option<String> = None;
            for c in text.chars() {
                if let Some(t) = tag.as_mut() {
                    t.push(c);
                    if c == '>' {
                        words.insert(std::mem::take(t));
                        tag = None;
                    } else if t.len() > 40 {
                        tag = None;
                    }
                } else if c == '<' {
                    tag = Some("<".into());
                }
                if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                    word.push(c);
                } else if !word.is_empty() {
                    words.insert(std::mem::take(&mut word));
                }
            }
        }
        self.dictionary.extend(
            words
                .into_iter()
                .filter(|w| w.len() > 1 && w.len() <= 40)
                .take(2000)
                .map(String::into_bytes),
        );
        self
    }

    fn token(&self, rng: &mut Rng) -> &[u8] {
        rng.pick(&self.dictionary).map_or(b"", Vec::as_slice)
    }

    /// One to five mutations of `seed`.
    pub fn mutate(&self, rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
        let mut out = seed.to_vec();
        // Mostly few mutations, so most mutants stay close to a valid input and get deep.
        let rounds = 1 + rng.below(2) + rng.below(3) * usize::from(rng.chance(1, 3));
        for _ in 0..rounds {
            self.mutate_once(rng, &mut out);
        }
        out.truncate(self.max_len);
        out
    }

    fn mutate_once(&self, rng: &mut Rng, b: &mut Vec<u8>) {
        let len = b.len();
        let at = rng.below(len + 1);
        let span = |rng: &mut Rng, at: usize| {
            let room = len - at;
            (1 + rng.below(room.clamp(1, 32))).min(room)
        };
        match rng.below(13) {
            0 if len > 0 => {
                let i = rng.below(len);
                b[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                b[i] = rng.next_u64() as u8;
            }
            2 if len > 0 => {
                let i = rng.below(len);
                let v = [
                    0u8, 1, 0x7F, 0x80, 0xFF, b'<', b'>', b'&', b'"', b'\n', b'\r', b'=',
                ];
                b[i] = v[rng.below(v.len())];
            }
            3 if at < len => {
                let n = span(rng, at);
                b.drain(at..at + n);
            }
            4 => {
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                b.splice(at..at, bytes);
            }
            5 | 6 => {
                let t = self.token(rng).to_vec();
                b.splice(at..at, t);
            }
            7 if at < len => {
                let t = self.token(rng).to_vec();
                let end = (at + t.len()).min(len);
                b.splice(at..end, t);
            }
            8 if at < len => {
                // A copy of a stretch somewhere else: repeats elements, nests them.
                let n = span(rng, at).max(rng.below((len - at).min(512) + 1));
                let piece = b[at..at + n].to_vec();
                let to = rng.below(len + 1);
                b.splice(to..to, piece);
            }
            9 => {
                // The tail of another corpus entry after a prefix of this one.
                if let Some(other) = rng.pick(&self.corpus) {
                    let from = rng.below(other.len() + 1);
                    b.truncate(at);
                    b.extend_from_slice(&other[from..]);
                }
            }
            10 if at < len => {
                b.truncate(at);
            }
            11 => self.replace_number(rng, b),
            12 if len >= 4 => {
                // Machine integers in place: lengths and counts of binary formats.
                let v = INTERESTING_U32[rng.below(INTERESTING_U32.len())];
                let width = [1usize, 2, 4][rng.below(3)];
                let i = rng.below(len - width + 1);
                b[i..i + width].copy_from_slice(&v.to_ne_bytes()[..width]);
            }
            _ => {
                let t = self.token(rng).to_vec();
                b.splice(at..at, t);
            }
        }
    }

    /// Replaces a run of ASCII digits with a number at some edge (`65536`, `-1`, `1e309`).
    fn replace_number(&self, rng: &mut Rng, b: &mut Vec<u8>) {
        let digits: Vec<usize> = (0..b.len()).filter(|&i| b[i].is_ascii_digit()).collect();
        let Some(&start) = rng.pick(&digits) else {
            return;
        };
        let mut s = start;
        while s > 0 && b[s - 1].is_ascii_digit() {
            s -= 1;
        }
        let mut e = start;
        while e < b.len() && b[e].is_ascii_digit() {
            e += 1;
        }
        let n = INTERESTING_NUMBERS[rng.below(INTERESTING_NUMBERS.len())];
        b.splice(s..e, n.bytes());
    }
}

/// A string that shows what bytes an input held: text as text, anything else as hex.
pub fn show_bytes(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => format!("{s:?}"),
        Err(_) => b.iter().map(|x| format!("{x:02x}")).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_a_pure_function_of_its_seed() {
        let a: Vec<u64> = (0..4)
            .scan(Rng::new(7), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..4)
            .scan(Rng::new(7), |r, _| Some(r.next_u64()))
            .collect();
        let c: Vec<u64> = (0..4)
            .scan(Rng::new(8), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut r = Rng::new(1);
        assert!((0..1000).all(|_| r.below(7) < 7));
        assert_eq!(r.below(0), 0);
    }

    #[test]
    fn mutants_are_reproducible_and_differ_from_their_seed() {
        let corpus = vec![b"<a>12</a>".to_vec(), b"<b/>".to_vec()];
        let m = Mutator::new(&corpus, &[b"<c>"]).with_corpus_words();
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (0..200)
                .map(|_| m.mutate(&mut rng, &corpus[0]))
                .collect::<Vec<_>>()
        };
        let first = run(3);
        assert_eq!(first, run(3));
        assert!(first.iter().filter(|m| **m != corpus[0]).count() > 150);
        assert!(m.dictionary.iter().any(|w| w == b"<a>"));
    }

    /// A planted bug is found, and the input reported is cut down to what triggers it.
    #[test]
    fn a_failure_is_found_and_minimized() {
        let seeds = vec![b"ab<x>cd".to_vec()];
        let m = Mutator::new(&seeds, &[b"!"]);
        let outcome = std::panic::catch_unwind(|| {
            run(
                "planted",
                Budget {
                    iters: 20_000,
                    seed: 1,
                },
                &seeds,
                |rng, s| m.mutate(rng, s),
                |b: &Vec<u8>| {
                    if b.contains(&b'!') {
                        let i = b.len();
                        // An out-of-bounds index: a panic, as a real decoder bug would be.
                        Ok(format!("{}", b[i]))
                    } else {
                        Ok("fine".into())
                    }
                },
            )
        });
        let Err(payload) = outcome else {
            panic!("the planted bug was not found");
        };
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(
            message.contains("panicked: index out of bounds"),
            "{message}"
        );
        assert!(message.contains("minimized input: \"!\"\n"), "{message}");
    }

    #[test]
    fn budgets_come_from_the_environment_or_the_default() {
        let b = Budget::from_env_var("CAIRN_FUZZ_TEST_UNSET_VARIABLE", 17);
        assert_eq!(b.iters, 17);
    }
}
