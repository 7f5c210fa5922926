//! Tests of `gpu_mlp::data`: the shipped MNIST loads and matches an independent reader (the
//! `mnist` crate), and every kind of damaged file is refused with a message naming the file.

mod common;

use common::{
    gzip, idx_images, idx_labels, mnist_dir, MNIST_FILES, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS,
};
use flate2::read::GzDecoder;
use gpu_mlp::data::{
    load_mnist, read_idx_images, read_idx_labels, xor, DataError, Dataset, MNIST_CLASSES, MNIST_PIXELS,
};
use std::fs;
use std::io::Read;
use std::path::Path;
use tempfile::TempDir;

/// Decompresses the four shipped .gz files into a fresh directory under their raw names.
fn decompressed_copy() -> TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for name in MNIST_FILES {
        let gz = fs::read(mnist_dir().join(format!("{name}.gz"))).unwrap();
        let mut raw = Vec::new();
        GzDecoder::new(gz.as_slice()).read_to_end(&mut raw).unwrap();
        fs::write(tmp.path().join(name), raw).unwrap();
    }
    tmp
}

/// A small valid data set in a fresh directory: 3 training examples, 2 test examples, raw files.
fn synthetic_dir() -> TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: Vec<u8>| fs::write(tmp.path().join(name), bytes).unwrap();
    write(TRAIN_IMAGES, idx_images(3, 28, 28, 3 * MNIST_PIXELS));
    write(TRAIN_LABELS, idx_labels(3, &[7, 0, 9]));
    write(TEST_IMAGES, idx_images(2, 28, 28, 2 * MNIST_PIXELS));
    write(TEST_LABELS, idx_labels(2, &[1, 2]));
    tmp
}

/// Loads `dir`, expecting an error whose message names `file`.
fn load_err(dir: &Path, file: &str) -> DataError {
    let err = match load_mnist(dir) {
        Ok(_) => panic!("loading {} should have failed", dir.display()),
        Err(err) => err,
    };
    let message = err.to_string();
    assert!(message.contains(file), "message does not name {file}: {message}");
    err
}

fn histogram(labels: &[u8]) -> [usize; 10] {
    let mut counts = [0; 10];
    for &l in labels {
        counts[l as usize] += 1;
    }
    counts
}

#[test]
fn loads_the_shipped_mnist() {
    let mnist = load_mnist(&mnist_dir()).unwrap();
    for (set, n) in [(&mnist.train, 60_000), (&mnist.test, 10_000)] {
        assert_eq!(set.len(), n);
        assert_eq!(set.images.len(), n * MNIST_PIXELS);
        assert_eq!((set.features, set.classes), (784, 10));
        assert!(set.images.contains(&0) && set.images.contains(&255));
    }
    assert_eq!(
        histogram(&mnist.train.labels),
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert_eq!(
        histogram(&mnist.test.labels),
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
}

/// An independent reader must see exactly the same bytes.
#[test]
fn matches_the_mnist_crate() {
    let raw = decompressed_copy();
    let base = raw.path().to_str().unwrap();
    let theirs = mnist::MnistBuilder::new().base_path(base).finalize();
    let ours = load_mnist(&mnist_dir()).unwrap();
    assert!(ours.train.images == theirs.trn_img, "training images differ");
    assert_eq!(ours.train.labels, theirs.trn_lbl);
    assert!(ours.test.images == theirs.tst_img, "test images differ");
    assert_eq!(ours.test.labels, theirs.tst_lbl);
}

#[test]
fn raw_files_load_like_gz_files() {
    let raw = decompressed_copy();
    let from_raw = load_mnist(raw.path()).unwrap();
    let from_gz = load_mnist(&mnist_dir()).unwrap();
    assert_eq!(from_raw.train, from_gz.train);
    assert_eq!(from_raw.test, from_gz.test);
}

/// Gzip is recognised by content, and the dotted spelling `train-images.idx3-ubyte` is accepted.
#[test]
fn gzip_by_content_and_dotted_names() {
    let plain = synthetic_dir();
    let expected = load_mnist(plain.path()).unwrap();

    let other = tempfile::tempdir().unwrap();
    for name in MNIST_FILES {
        let bytes = fs::read(plain.path().join(name)).unwrap();
        let dotted = name.replacen("-idx", ".idx", 1);
        // Gzip content under a name without .gz for two files, plain .gz for the others.
        let (target, bytes) = match name {
            TRAIN_IMAGES | TEST_LABELS => (dotted, gzip(&bytes)),
            _ => (format!("{dotted}.gz"), gzip(&bytes)),
        };
        fs::write(other.path().join(target), bytes).unwrap();
    }
    let loaded = load_mnist(other.path()).unwrap();
    assert_eq!(loaded.train, expected.train);
    assert_eq!(loaded.test, expected.test);
    assert_eq!(loaded.train.labels, [7, 0, 9]);
    assert_eq!(loaded.train.image(1)[0], (MNIST_PIXELS % 256) as u8);
}

#[test]
fn missing_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("no-such-dir");
    let err = load_err(&dir, "no-such-dir");
    assert!(matches!(err, DataError::DirMissing { .. }), "{err:?}");
    assert!(err.to_string().contains("--data-dir"));
}

#[test]
fn missing_file() {
    let tmp = synthetic_dir();
    fs::remove_file(tmp.path().join(TEST_LABELS)).unwrap();
    let err = load_err(tmp.path(), "t10k-labels-idx1-ubyte.gz");
    assert!(matches!(err, DataError::FileMissing { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("t10k-labels.idx1-ubyte"), "{message}");
    assert!(message.contains("--data-dir"), "{message}");
}

#[test]
fn missing_file_read_directly() {
    let tmp = tempfile::tempdir().unwrap();
    let err = read_idx_labels(&tmp.path().join("gone-labels")).unwrap_err();
    assert!(matches!(err, DataError::FileMissing { .. }), "{err:?}");
    assert!(err.to_string().contains("gone-labels"), "{err}");
}

#[test]
fn empty_file() {
    let tmp = synthetic_dir();
    fs::write(tmp.path().join(TRAIN_LABELS), b"").unwrap();
    let err = load_err(tmp.path(), TRAIN_LABELS);
    assert!(matches!(err, DataError::Empty { .. }), "{err:?}");
}

#[test]
fn header_too_short() {
    let tmp = synthetic_dir();
    // Right magic, then only 6 of the 16 header bytes.
    fs::write(tmp.path().join(TEST_IMAGES), &idx_images(2, 28, 28, 0)[..6]).unwrap();
    let err = load_err(tmp.path(), TEST_IMAGES);
    assert!(
        matches!(
            err,
            DataError::HeaderTooShort {
                needed: 16,
                found: 6,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn truncated_image_body() {
    let tmp = synthetic_dir();
    fs::write(
        tmp.path().join(TRAIN_IMAGES),
        idx_images(3, 28, 28, 3 * MNIST_PIXELS - 1),
    )
    .unwrap();
    let err = load_err(tmp.path(), TRAIN_IMAGES);
    assert!(
        matches!(
            err,
            DataError::Truncated {
                expected: 2352,
                found: 2351,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn trailing_bytes() {
    let tmp = synthetic_dir();
    fs::write(tmp.path().join(TRAIN_LABELS), idx_labels(3, &[7, 0, 9, 4])).unwrap();
    let err = load_err(tmp.path(), TRAIN_LABELS);
    assert!(
        matches!(
            err,
            DataError::TrailingBytes {
                expected: 3,
                found: 4,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn wrong_magic() {
    let tmp = synthetic_dir();
    let mut bytes = idx_images(3, 28, 28, 3 * MNIST_PIXELS);
    bytes[3] = 0x04; // 2052: a 4-dimensional file
    fs::write(tmp.path().join(TRAIN_IMAGES), bytes).unwrap();
    let err = load_err(tmp.path(), TRAIN_IMAGES);
    assert!(
        matches!(
            err,
            DataError::WrongMagic {
                found: 2052,
                expected: 2051,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn swapped_image_and_label_files() {
    let tmp = synthetic_dir();
    let images = tmp.path().join(TEST_IMAGES);
    let labels = tmp.path().join(TEST_LABELS);
    let temp = tmp.path().join("swap");
    fs::rename(&images, &temp).unwrap();
    fs::rename(&labels, &images).unwrap();
    fs::rename(&temp, &labels).unwrap();
    let err = load_err(tmp.path(), TEST_IMAGES);
    assert!(
        matches!(
            err,
            DataError::SwappedFiles {
                found: 2049,
                expected: 2051,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("swapped"), "{err}");
    // And the other way round, reading the label file directly.
    let err = read_idx_labels(&labels).unwrap_err();
    assert!(matches!(err, DataError::SwappedFiles { found: 2051, .. }), "{err:?}");
}

#[test]
fn wrong_dims() {
    let tmp = synthetic_dir();
    fs::write(tmp.path().join(TRAIN_IMAGES), idx_images(3, 32, 32, 3 * 32 * 32)).unwrap();
    let err = load_err(tmp.path(), TRAIN_IMAGES);
    assert!(
        matches!(err, DataError::WrongDims { rows: 32, cols: 32, .. }),
        "{err:?}"
    );
}

/// The real training images with a label file that lost its last label.
#[test]
fn mismatched_counts() {
    let tmp = synthetic_dir();
    fs::remove_file(tmp.path().join(TRAIN_IMAGES)).unwrap();
    fs::copy(
        mnist_dir().join(format!("{TRAIN_IMAGES}.gz")),
        tmp.path().join(format!("{TRAIN_IMAGES}.gz")),
    )
    .unwrap();
    let labels = read_idx_labels(&mnist_dir().join(format!("{TRAIN_LABELS}.gz"))).unwrap();
    fs::write(tmp.path().join(TRAIN_LABELS), idx_labels(59_999, &labels[..59_999])).unwrap();
    let err = load_err(tmp.path(), TRAIN_LABELS);
    assert!(
        matches!(
            err,
            DataError::CountMismatch {
                image_count: 60_000,
                label_count: 59_999,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(TRAIN_IMAGES), "{err}");
}

#[test]
fn gz_name_without_gzip_content() {
    let tmp = synthetic_dir();
    let raw = tmp.path().join(TRAIN_LABELS);
    fs::rename(&raw, tmp.path().join(format!("{TRAIN_LABELS}.gz"))).unwrap();
    let err = load_err(tmp.path(), TRAIN_LABELS);
    assert!(matches!(err, DataError::NotGzip { .. }), "{err:?}");
    assert!(err.to_string().contains("00 00"), "{err}");
}

#[test]
fn corrupt_gzip() {
    let tmp = synthetic_dir();
    let good = gzip(&idx_images(3, 28, 28, 3 * MNIST_PIXELS));
    let cases = [
        ("cut short", good[..good.len() / 2].to_vec()),
        ("bytes flipped", {
            let mut bad = good.clone();
            for b in &mut bad[12..good.len() - 8] {
                *b ^= 0x5a;
            }
            bad
        }),
    ];
    for (what, bytes) in cases {
        fs::write(tmp.path().join(TRAIN_IMAGES), bytes).unwrap();
        let err = load_err(tmp.path(), TRAIN_IMAGES);
        assert!(matches!(err, DataError::CorruptGzip { .. }), "{what}: {err:?}");
    }
}

#[test]
fn label_out_of_range() {
    let tmp = synthetic_dir();
    fs::write(tmp.path().join(TEST_LABELS), idx_labels(2, &[3, 10])).unwrap();
    let err = load_err(tmp.path(), TEST_LABELS);
    assert!(
        matches!(
            err,
            DataError::BadLabel {
                index: 1,
                value: 10,
                ..
            }
        ),
        "{err:?}"
    );
}

/// A header claiming 4 billion images (3 TB) must be caught by comparing sizes, not by allocating
/// or reading what it claims.
#[test]
fn absurd_image_count() {
    let tmp = synthetic_dir();
    fs::write(
        tmp.path().join(TRAIN_IMAGES),
        idx_images(u32::MAX, 28, 28, 3 * MNIST_PIXELS),
    )
    .unwrap();
    let err = load_err(tmp.path(), TRAIN_IMAGES);
    assert!(
        matches!(
            err,
            DataError::HeaderTooLarge {
                count: u32::MAX,
                expected: 3_367_254_359_280,
                ..
            }
        ),
        "{err:?}"
    );
    // The same through the single-file reader.
    let err = read_idx_images(&tmp.path().join(TRAIN_IMAGES)).unwrap_err();
    assert!(matches!(err, DataError::HeaderTooLarge { .. }), "{err:?}");
}

/// A header claiming more images than follow, within the size limit, is a truncated file.
#[test]
fn more_images_promised_than_follow() {
    let tmp = synthetic_dir();
    fs::write(
        tmp.path().join(TRAIN_IMAGES),
        idx_images(1000, 28, 28, 3 * MNIST_PIXELS),
    )
    .unwrap();
    let err = load_err(tmp.path(), TRAIN_IMAGES);
    assert!(
        matches!(
            err,
            DataError::Truncated {
                count: 1000,
                found: 2352,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn xor_truth_table() {
    let data = xor();
    assert_eq!(data.len(), 4);
    assert_eq!((data.features, data.classes), (2, 2));
    assert_eq!(data.labels, [0, 1, 1, 0]);
    for i in 0..4 {
        let [a, b] = data.image(i) else {
            panic!("example {i} does not have 2 features")
        };
        assert!([0, 255].contains(a) && [0, 255].contains(b));
        assert_eq!(data.labels[i], u8::from((*a == 255) ^ (*b == 255)));
    }
}

fn numbered(n: usize) -> Dataset {
    Dataset {
        images: (0..n * 3).map(|i| i as u8).collect(),
        labels: (0..n).map(|i| (i % MNIST_CLASSES) as u8).collect(),
        features: 3,
        classes: MNIST_CLASSES,
    }
}

#[test]
fn split_off_validation() {
    let original = numbered(10);
    let mut train = original.clone();
    let held_out = train.split_off_validation(4).unwrap();
    assert_eq!((train.len(), held_out.len()), (6, 4));
    assert_eq!(train, original.truncated(6));
    assert_eq!(held_out.images, original.images[6 * 3..]);
    assert_eq!(held_out.labels, original.labels[6..]);
    assert_eq!(held_out.image(0), original.image(6));
    assert_eq!((held_out.features, held_out.classes), (3, 10));

    let mut small = numbered(5);
    let err = small.split_off_validation(5).unwrap_err();
    assert!(
        matches!(err, DataError::ValidationTooLarge { requested: 5, len: 5 }),
        "{err:?}"
    );
    assert_eq!(small, numbered(5), "a failed split must leave the data alone");
    assert!(small.split_off_validation(0).unwrap().is_empty());
}

#[test]
fn truncated_keeps_the_first_examples() {
    let data = numbered(5);
    let two = data.truncated(2);
    assert_eq!(two.len(), 2);
    assert_eq!(two.images, [0, 1, 2, 3, 4, 5]);
    assert_eq!(two.labels, [0, 1]);
    assert_eq!(data.truncated(99), data);
    assert!(data.truncated(0).is_empty());
}
