//! Loading the data sets the trainer learns from: MNIST (from IDX files) and the tiny XOR problem.
//!
//! # The IDX format
//!
//! MNIST ships as four IDX files (usually gzip-compressed). Header fields are big-endian `u32`s:
//!
//! ```text
//! offset  field
//!  0      magic: bytes 00 00, then 08 (= data are unsigned bytes), then the number of dimensions:
//!         2051 (0x0803) for an image file, 2049 (0x0801) for a label file
//!  4      n, the number of examples
//!  8      rows     } image files only; 28 and 28 for MNIST
//! 12      columns  }
//! 16 / 8  the data (after the 16-byte image header or the 8-byte label header):
//!         n × rows × columns pixels, row-major, 0 = paper … 255 = ink; or n labels, each 0..=9
//! ```
//!
//! The files are small (MNIST's largest is 47 MB), so each one is read whole into memory and only then checked
//! against its header. That way a corrupt header (say one claiming 4 billion images) is caught by
//! comparing numbers, never by trying to allocate what it claims.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

/// MNIST images are `MNIST_SIDE × MNIST_SIDE` pixels.
pub const MNIST_SIDE: usize = 28;
/// Pixels per MNIST image: the number of input features of the network.
pub const MNIST_PIXELS: usize = MNIST_SIDE * MNIST_SIDE;
/// The ten digits 0..=9.
pub const MNIST_CLASSES: usize = 10;

/// Magic number of an IDX file of unsigned bytes with 3 dimensions (images).
const IMAGES_MAGIC: u32 = 0x0803;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (labels).
const LABELS_MAGIC: u32 = 0x0801;
/// Header sizes: magic + count (+ rows + cols for images).
const IMAGES_HEADER: usize = 16;
const LABELS_HEADER: usize = 8;
/// No MNIST-like file comes near this; the cap stops a hostile gzip file that inflates to many
/// gigabytes (a "zip bomb") from exhausting memory.
const MAX_FILE_BYTES: u64 = 1 << 30;

/// The four MNIST files, as (training images, training labels, test images, test labels).
const MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// Labelled examples held as bytes exactly as in the file: `images` is n × features, row-major.
/// Pixels are u8 (0..=255); the trainer normalises them to [0,1] when it gathers a batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    /// Pixels per example (784 for MNIST, 2 for XOR).
    pub features: usize,
    /// Number of classes (10 for MNIST, 2 for XOR).
    pub classes: usize,
}

impl Dataset {
    /// Number of examples (one label each).
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The features of example `i`.
    ///
    /// # Panics
    /// If `i >= self.len()`, like slice indexing.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * self.features..(i + 1) * self.features]
    }

    /// The first `n` examples (n clamped to len): for quick tests.
    pub fn truncated(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        Dataset {
            images: self.images[..n * self.features].to_vec(),
            labels: self.labels[..n].to_vec(),
            features: self.features,
            classes: self.classes,
        }
    }

    /// Moves the last `n` examples into a new Dataset (the held-out validation set) and returns it;
    /// `self` keeps the rest. Errors (DataError::ValidationTooLarge) if n >= len, because
    /// training needs at least one example.
    pub fn split_off_validation(&mut self, n: usize) -> Result<Dataset, DataError> {
        let len = self.len();
        if n >= len {
            return Err(DataError::ValidationTooLarge { requested: n, len });
        }
        let keep = len - n;
        Ok(Dataset {
            images: self.images.split_off(keep * self.features),
            labels: self.labels.split_off(keep),
            features: self.features,
            classes: self.classes,
        })
    }
}

/// The four-sample XOR problem: features 2 (stored as 0 or 255 so the same /255 normalisation
/// gives 0.0 or 1.0), classes 2, labels a XOR b. It is not linearly separable, so learning it
/// proves the hidden layer works.
pub fn xor() -> Dataset {
    Dataset {
        images: vec![0, 0, 0, 255, 255, 0, 255, 255],
        labels: vec![0, 1, 1, 0],
        features: 2,
        classes: 2,
    }
}

/// The MNIST training set (60 000 examples) and test set (10 000).
pub struct Mnist {
    pub train: Dataset,
    pub test: Dataset,
}

/// Reads the four MNIST files from `dir`. For each file base name (e.g. "train-images-idx3-ubyte")
/// it accepts `NAME.gz` or raw `NAME` (also the common alternative spelling with a dot,
/// `train-images.idx3-ubyte`, for both). Whether a file is gzip is decided by its first two bytes
/// (1f 8b), not by its name — except that a file whose name ends in `.gz` but is not gzip is an
/// error (NotGzip).
pub fn load_mnist(dir: &Path) -> Result<Mnist, DataError> {
    if !dir.is_dir() {
        return Err(DataError::DirMissing {
            path: dir.to_path_buf(),
        });
    }
    // Find all four before reading any, so a missing file is reported at once.
    let [train_images, train_labels, test_images, test_labels] = MNIST_FILES.map(|n| find(dir, n));
    let (train_images, train_labels) = (train_images?, train_labels?);
    let (test_images, test_labels) = (test_images?, test_labels?);
    Ok(Mnist {
        train: load_pair(&train_images, &train_labels)?,
        test: load_pair(&test_images, &test_labels)?,
    })
}

/// Reads one IDX image file (magic 2051, gz or raw) and returns (pixels, count).
/// Requires rows = cols = 28, so the pixels are `count × 784` bytes.
pub fn read_idx_images(path: &Path) -> Result<(Vec<u8>, usize), DataError> {
    let mut bytes = read_maybe_gz(path, MAX_FILE_BYTES)?;
    check_magic(path, &bytes, IMAGES_MAGIC, IMAGES_HEADER)?;
    let count = be_u32(&bytes, 4);
    let (rows, cols) = (be_u32(&bytes, 8), be_u32(&bytes, 12));
    if rows as usize != MNIST_SIDE || cols as usize != MNIST_SIDE {
        return Err(DataError::WrongDims {
            path: path.to_path_buf(),
            rows,
            cols,
        });
    }
    // u64 arithmetic: u32::MAX × 784 cannot overflow it, and nothing is allocated from it.
    let expected = u64::from(count) * MNIST_PIXELS as u64;
    check_body_len(path, "image", count, expected, bytes.len() - IMAGES_HEADER)?;
    bytes.drain(..IMAGES_HEADER);
    Ok((bytes, count as usize))
}

/// Reads one IDX label file (magic 2049, gz or raw); every label must be < 10.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    let mut bytes = read_maybe_gz(path, MAX_FILE_BYTES)?;
    check_magic(path, &bytes, LABELS_MAGIC, LABELS_HEADER)?;
    let count = be_u32(&bytes, 4);
    check_body_len(path, "label", count, u64::from(count), bytes.len() - LABELS_HEADER)?;
    bytes.drain(..LABELS_HEADER);
    if let Some(index) = bytes.iter().position(|&l| l as usize >= MNIST_CLASSES) {
        return Err(DataError::BadLabel {
            path: path.to_path_buf(),
            index,
            value: bytes[index],
        });
    }
    Ok(bytes)
}

/// Everything that can go wrong while loading data. Each message names the file, says what was
/// wrong with the numbers involved, and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(
        "data directory {path} does not exist or is not a directory; pass `--data-dir DIR` \
         pointing at a folder with the four MNIST files, or copy them again from the repository's data/mnist"
    )]
    DirMissing { path: PathBuf },

    #[error(
        "no MNIST file found in {dir} under any of the names {}; pass `--data-dir DIR` pointing at \
         a folder with the four MNIST files, or copy them again from the repository's data/mnist",
        .tried.join(", ")
    )]
    FileMissing { dir: PathBuf, tried: Vec<String> },

    #[error("could not read {path} ({source}); check that it is a readable file")]
    Io { path: PathBuf, source: io::Error },

    #[error("{path} is empty (0 bytes); copy it again from the repository's data/mnist")]
    Empty { path: PathBuf },

    #[error(
        "{path} is named .gz but is not gzip (it starts with {}, not 1f 8b); \
         if it is a raw IDX file, remove the .gz from its name",
        hex(.first)
    )]
    NotGzip { path: PathBuf, first: Vec<u8> },

    #[error("{path} is a corrupt gzip stream ({source}); copy it again from the repository's data/mnist")]
    CorruptGzip { path: PathBuf, source: io::Error },

    #[error("{path} holds more than {limit} bytes (after decompression), far more than any MNIST-style file; check that it is the right file")]
    TooLarge { path: PathBuf, limit: u64 },

    #[error(
        "{path} is only {found} bytes long, shorter than the {needed}-byte IDX {kind} header; \
         the file is cut short, copy it again"
    )]
    HeaderTooShort {
        path: PathBuf,
        kind: &'static str,
        needed: usize,
        found: usize,
    },

    #[error(
        "{path} has magic number {found} but IDX {kind} files start with {expected}; \
         it is not an MNIST {kind} file, point `--data-dir` at the right folder"
    )]
    WrongMagic {
        path: PathBuf,
        kind: &'static str,
        found: u32,
        expected: u32,
    },

    #[error(
        "{path} has magic number {found}, that of {found_kind} files, where {expected_kind} files \
         have {expected}; the image and label files look swapped, check their names"
    )]
    SwappedFiles {
        path: PathBuf,
        expected_kind: &'static str,
        found_kind: &'static str,
        found: u32,
        expected: u32,
    },

    #[error(
        "{path} holds {rows}×{cols} images but this program needs 28×28; \
         use an MNIST-format data set such as MNIST or Fashion-MNIST"
    )]
    WrongDims { path: PathBuf, rows: u32, cols: u32 },

    #[error(
        "{path} is truncated: its header promises {count} {kind}s ({expected} bytes of data) \
         but only {found} bytes follow; copy the file again"
    )]
    Truncated {
        path: PathBuf,
        kind: &'static str,
        count: u32,
        expected: u64,
        found: usize,
    },

    #[error(
        "{path} is longer than its header says: {count} {kind}s need {expected} bytes of data \
         but {found} follow; the header or the file is corrupt, copy it again"
    )]
    TrailingBytes {
        path: PathBuf,
        kind: &'static str,
        count: u32,
        expected: u64,
        found: usize,
    },

    #[error(
        "{images} holds {image_count} images but {labels} holds {label_count} labels; \
         the two files must come from the same set, copy them again"
    )]
    CountMismatch {
        images: PathBuf,
        image_count: usize,
        labels: PathBuf,
        label_count: usize,
    },

    #[error(
        "{path}: label number {index} is {value}, but MNIST labels must be 0..=9; \
         the file is corrupt or not an MNIST label file"
    )]
    BadLabel { path: PathBuf, index: usize, value: u8 },

    #[error(
        "cannot hold out {requested} of {len} examples for validation, since at least one must be \
         left for training; ask for fewer than {len}"
    )]
    ValidationTooLarge { requested: usize, len: usize },
}

/// Finds the file for base name `name` in `dir` under its accepted spellings, in this order:
/// `NAME.gz`, `NAME`, then the same with a dot before "idx" (`train-images.idx3-ubyte`).
fn find(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    let dotted = name.replacen("-idx", ".idx", 1);
    let tried = [format!("{name}.gz"), name.to_string(), format!("{dotted}.gz"), dotted];
    match tried.iter().map(|n| dir.join(n)).find(|p| p.is_file()) {
        Some(path) => Ok(path),
        None => Err(DataError::FileMissing {
            dir: dir.to_path_buf(),
            tried: tried.to_vec(),
        }),
    }
}

/// Loads an image file and its label file, and checks they describe the same examples.
fn load_pair(images_path: &Path, labels_path: &Path) -> Result<Dataset, DataError> {
    let (images, image_count) = read_idx_images(images_path)?;
    let labels = read_idx_labels(labels_path)?;
    if image_count != labels.len() {
        return Err(DataError::CountMismatch {
            images: images_path.to_path_buf(),
            image_count,
            labels: labels_path.to_path_buf(),
            label_count: labels.len(),
        });
    }
    Ok(Dataset {
        images,
        labels,
        features: MNIST_PIXELS,
        classes: MNIST_CLASSES,
    })
}

/// Reads a whole file, decompressing it if it starts with the gzip magic bytes 1f 8b.
/// At most `limit` bytes are accepted, before or after decompression.
fn read_maybe_gz(path: &Path, limit: u64) -> Result<Vec<u8>, DataError> {
    let io_err = |source: io::Error| match source.kind() {
        io::ErrorKind::NotFound => DataError::FileMissing {
            dir: path.parent().unwrap_or(Path::new("")).to_path_buf(),
            tried: vec![path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())],
        },
        _ => DataError::Io {
            path: path.to_path_buf(),
            source,
        },
    };
    let file = File::open(path).map_err(io_err)?;
    let raw = read_limited(BufReader::new(file), limit).map_err(|e| match e {
        ReadError::Io(source) => io_err(source),
        ReadError::TooLarge => DataError::TooLarge {
            path: path.to_path_buf(),
            limit,
        },
    })?;

    let named_gz = path.extension().is_some_and(|e| e == "gz");
    match raw.as_slice() {
        [] => Err(DataError::Empty {
            path: path.to_path_buf(),
        }),
        [0x1f, 0x8b, ..] => {
            // MultiGz: also reads files made of several concatenated gzip members, as `zcat` does.
            read_limited(MultiGzDecoder::new(raw.as_slice()), limit).map_err(|e| match e {
                ReadError::Io(source) => DataError::CorruptGzip {
                    path: path.to_path_buf(),
                    source,
                },
                ReadError::TooLarge => DataError::TooLarge {
                    path: path.to_path_buf(),
                    limit,
                },
            })
        }
        _ if named_gz => Err(DataError::NotGzip {
            path: path.to_path_buf(),
            first: raw[..raw.len().min(2)].to_vec(),
        }),
        _ => Ok(raw),
    }
}

enum ReadError {
    Io(io::Error),
    TooLarge,
}

/// `read_to_end`, but failing once more than `limit` bytes come out.
fn read_limited(reader: impl Read, limit: u64) -> Result<Vec<u8>, ReadError> {
    let mut out = Vec::new();
    reader.take(limit + 1).read_to_end(&mut out).map_err(ReadError::Io)?;
    if out.len() as u64 > limit {
        return Err(ReadError::TooLarge);
    }
    Ok(out)
}

/// Bytes as `1f 8b`, for messages.
fn hex(bytes: &[u8]) -> String {
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    hex.join(" ")
}

/// The big-endian u32 at `at`; callers have checked that `bytes` is long enough.
fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Checks the magic number first (so swapped files are named as such even when short), then that
/// the whole header is present.
fn check_magic(path: &Path, bytes: &[u8], expected: u32, header: usize) -> Result<(), DataError> {
    let kind = kind_of(expected);
    let too_short = |found| DataError::HeaderTooShort {
        path: path.to_path_buf(),
        kind,
        needed: header,
        found,
    };
    if bytes.len() < 4 {
        return Err(too_short(bytes.len()));
    }
    let found = be_u32(bytes, 0);
    let other = if expected == IMAGES_MAGIC {
        LABELS_MAGIC
    } else {
        IMAGES_MAGIC
    };
    if found == other {
        return Err(DataError::SwappedFiles {
            path: path.to_path_buf(),
            expected_kind: kind,
            found_kind: kind_of(other),
            found,
            expected,
        });
    }
    if found != expected {
        return Err(DataError::WrongMagic {
            path: path.to_path_buf(),
            kind,
            found,
            expected,
        });
    }
    if bytes.len() < header {
        return Err(too_short(bytes.len()));
    }
    Ok(())
}

fn kind_of(magic: u32) -> &'static str {
    if magic == IMAGES_MAGIC {
        "image"
    } else {
        "label"
    }
}

/// The data after the header must be exactly as long as the header says: shorter means the file
/// was cut off, longer means the header's count is wrong.
fn check_body_len(path: &Path, kind: &'static str, count: u32, expected: u64, found: usize) -> Result<(), DataError> {
    let path = path.to_path_buf();
    match (found as u64).cmp(&expected) {
        std::cmp::Ordering::Less => Err(DataError::Truncated {
            path,
            kind,
            count,
            expected,
            found,
        }),
        std::cmp::Ordering::Greater => Err(DataError::TrailingBytes {
            path,
            kind,
            count,
            expected,
            found,
        }),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// The size cap cannot be reached by a fast integration test (it is 1 GiB), so it is tested
    /// here with a small limit: a gzip stream that inflates past the limit must be refused.
    #[test]
    fn refuses_output_beyond_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bomb.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![0u8; 10_000]).unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();

        assert_eq!(read_maybe_gz(&path, 10_000).unwrap().len(), 10_000);
        let err = read_maybe_gz(&path, 9_999).unwrap_err();
        assert!(matches!(err, DataError::TooLarge { limit: 9_999, .. }), "{err}");
    }
}
