//! Property test: random mutations of valid MNIST files (headers, counts, dimensions, truncation,
//! trailing bytes, gzip framing) never make the loader panic or allocate what a header claims.
//! Each load either succeeds with a consistent data set or returns a `DataError` whose message
//! names the file.
//!
//! The test process runs under an address-space limit (set at its start, like `prlimit --as`):
//! a load that tried to allocate a corrupt header's claim would fail the test by aborting.
//! The seed is fixed; `GPU_MLP_FUZZ_CASES=N` runs N cases instead of the CI's 3000.

mod common;

use common::{digit_labels, gzip, idx_images, idx_labels, MNIST_FILES};
use gpu_mlp::data::load_mnist;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// A valid IDX image file of `count` 28×28 images.
fn images(count: u32) -> Vec<u8> {
    idx_images(count, 28, 28, count as usize * 784)
}

/// A valid IDX label file of `count` labels.
fn labels(count: u32) -> Vec<u8> {
    idx_labels(count, &digit_labels(count as usize))
}

/// One change to a file's bytes, before or after compressing it.
#[derive(Clone, Debug)]
enum Mutation {
    /// Overwrite byte `at` (mod len) with `value`.
    Byte { at: usize, value: u8 },
    /// Overwrite the big-endian u32 at 4·`field` (a header field) with `value`.
    Field { field: usize, value: u32 },
    /// Keep only the first `len` (mod len + 1) bytes.
    Truncate { len: usize },
    /// Append bytes.
    Append { bytes: Vec<u8> },
    /// Append `len` zero bytes (gzip accepts them as padding).
    ZeroPad { len: usize },
    /// Split into two gzip members at `at` (gzipped files only).
    TwoMembers { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let extreme = prop::sample::select(vec![
        0u32,
        1,
        2,
        3,
        27,
        28,
        29,
        10_000,
        60_000,
        1 << 20,
        1 << 31,
        u32::MAX,
    ]);
    prop_oneof![
        (0usize..64, any::<u8>()).prop_map(|(at, value)| Mutation::Byte { at, value }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::Byte { at, value }),
        (0usize..4, prop_oneof![extreme, any::<u32>()]).prop_map(|(field, value)| Mutation::Field { field, value }),
        any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        prop::collection::vec(any::<u8>(), 1..40).prop_map(|bytes| Mutation::Append { bytes }),
        (1usize..5000).prop_map(|len| Mutation::ZeroPad { len }),
        any::<usize>().prop_map(|at| Mutation::TwoMembers { at }),
    ]
}

fn apply(mutation: &Mutation, raw: &[u8], gzipped: bool) -> Vec<u8> {
    let mut bytes = if gzipped { gzip(raw) } else { raw.to_vec() };
    match *mutation {
        Mutation::Byte { at, value } if !bytes.is_empty() => {
            let at = at % bytes.len();
            bytes[at] = value;
        }
        Mutation::Field { field, value } => {
            // Header fields are in the uncompressed data: mutate, then compress again.
            let mut raw = raw.to_vec();
            if raw.len() >= 4 * field + 4 {
                raw[4 * field..4 * field + 4].copy_from_slice(&value.to_be_bytes());
            }
            bytes = if gzipped { gzip(&raw) } else { raw };
        }
        Mutation::Truncate { len } => bytes.truncate(len % (bytes.len() + 1)),
        Mutation::Append { bytes: ref more } => bytes.extend(more),
        Mutation::ZeroPad { len } => bytes.resize(bytes.len() + len, 0),
        Mutation::TwoMembers { at } if gzipped => {
            let at = at % (raw.len() + 1);
            bytes = gzip(&raw[..at]);
            bytes.extend(gzip(&raw[at..]));
        }
        _ => {}
    }
    bytes
}

/// Limits this process's address space (as `prlimit --as` would) to what a few small loads need
/// plus the test harness.
fn limit_address_space() {
    let bytes: libc::rlim_t = 3 << 30;
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: setrlimit reads the struct we own.
    let done = unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) };
    assert_eq!(done, 0, "cannot set the address-space limit");
}

#[test]
fn mutated_mnist_files_never_crash_the_loader() {
    limit_address_space();
    let cases = std::env::var("GPU_MLP_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3000);
    let originals = [images(12), labels(12), images(5), labels(5)];
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[3u8; 32]));
    let strategy = (
        0usize..4,
        mutation(),
        any::<bool>(),
        prop::option::of((0usize..4, mutation())),
    );
    let (loaded, refused) = (std::cell::Cell::new(0usize), std::cell::Cell::new(0usize));
    runner
        .run(&strategy, |(file, first, gzipped, second)| {
            let dir = tempfile::tempdir().unwrap();
            for (i, name) in MNIST_FILES.iter().enumerate() {
                let mut bytes = if gzipped {
                    gzip(&originals[i])
                } else {
                    originals[i].clone()
                };
                if i == file {
                    bytes = apply(&first, &originals[i], gzipped);
                }
                if let Some((other, ref mutation)) = second {
                    if other == i {
                        bytes = apply(mutation, &bytes, false);
                    }
                }
                let name = if gzipped {
                    format!("{name}.gz")
                } else {
                    name.to_string()
                };
                std::fs::write(dir.path().join(name), bytes).unwrap();
            }
            match load_mnist(dir.path()) {
                Ok(mnist) => {
                    loaded.set(loaded.get() + 1);
                    for set in [&mnist.train, &mnist.test] {
                        prop_assert!(!set.is_empty());
                        prop_assert_eq!(set.images.len(), set.len() * 784);
                        prop_assert!(set.labels.iter().all(|&l| l < 10));
                    }
                }
                Err(error) => {
                    refused.set(refused.get() + 1);
                    let message = error.to_string();
                    prop_assert!(message.contains(&dir.path().display().to_string()), "{message}");
                    prop_assert!(!message.contains('\n'), "{message}");
                }
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let (loaded, refused) = (loaded.get(), refused.get());
    println!("{cases} cases: {loaded} loaded, {refused} refused");
    // The mutations must reach both outcomes, or the test proves little.
    assert!(
        loaded >= cases as usize / 20 && refused >= cases as usize / 4,
        "{loaded} loaded, {refused} refused"
    );
}
