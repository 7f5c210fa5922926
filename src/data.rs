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
//! Each file is read as a stream: the header first, then exactly the body it announces, so memory
//! never holds more than the file's real data, and a corrupt header (say one claiming 4 billion
//! images) or a gzip stream that inflates without end is refused by comparing numbers, never by
//! trying to allocate what it claims. Gzip files are read as `gzip -d` reads them: several
//! concatenated members, and trailing zero padding (as tape and some archivers leave), are fine.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::bufread::GzDecoder;

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
/// No MNIST-like file comes near this (EMNIST's largest is 640 MB); the cap stops a hostile
/// header or gzip file that claims or inflates to many gigabytes (a "zip bomb").
pub const MAX_FILE_BYTES: u64 = 1 << 30;

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

/// How the inputs are made from the pixels (`--normalize`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalize {
    /// x = p / 255, in [0, 1].
    #[default]
    Scale,
    /// x = (p/255 − μ_f) / max(σ_f, 0.1), with each pixel's mean and standard deviation over the
    /// training set (the same statistics applied to every split).
    Standardize,
}

crate::network::display_as_value_enum!(Normalize);

/// Per-feature statistics of `--normalize standardize`: x = (p/255 − mean[f]) · inv_std[f].
#[derive(Clone, Debug, PartialEq)]
pub struct Standardization {
    pub mean: Vec<f32>,
    /// 1 / max(σ, STD_FLOOR).
    pub inv_std: Vec<f32>,
}

impl Standardization {
    /// The smallest standard deviation divided by (on the [0, 1] scale): a pixel that is
    /// (nearly) constant over the training set, as MNIST's borders are, is not blown up ten-,
    /// hundred- or infinitely-fold where another split happens to have ink.
    pub const STD_FLOOR: f64 = 0.1;

    /// Each pixel's mean and standard deviation over `train`, in f64.
    pub fn of(train: &Dataset) -> Standardization {
        let features = train.features;
        let mut sum = vec![0f64; features];
        let mut sum_sq = vec![0f64; features];
        for image in train.images.chunks_exact(features) {
            for ((s, q), &p) in sum.iter_mut().zip(sum_sq.iter_mut()).zip(image) {
                let x = p as f64 / 255.0;
                *s += x;
                *q += x * x;
            }
        }
        let n = train.len().max(1) as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let inv_std = sum_sq
            .iter()
            .zip(&mean)
            .map(|(q, m)| {
                let variance = (q / n - m * m).max(0.0);
                (1.0 / variance.sqrt().max(Self::STD_FLOOR)) as f32
            })
            .collect();
        Standardization {
            mean: mean.iter().map(|&m| m as f32).collect(),
            inv_std,
        }
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
    idx_images(IdxStream::open(path, MAX_FILE_BYTES)?)
}

/// The images of an opened IDX stream.
fn idx_images(mut stream: IdxStream) -> Result<(Vec<u8>, usize), DataError> {
    let path = stream.path;
    let header = stream.header(IMAGES_MAGIC, IMAGES_HEADER)?;
    let count = be_u32(&header, 4);
    let (rows, cols) = (be_u32(&header, 8), be_u32(&header, 12));
    if rows as usize != MNIST_SIDE || cols as usize != MNIST_SIDE {
        return Err(DataError::WrongDims {
            path: path.to_path_buf(),
            rows,
            cols,
        });
    }
    // u64 arithmetic: u32::MAX × 784 cannot overflow it, and nothing is allocated from it.
    let pixels = stream.body("image", count, u64::from(count) * MNIST_PIXELS as u64)?;
    Ok((pixels, count as usize))
}

/// Reads one IDX label file (magic 2049, gz or raw); every label must be < 10.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    idx_labels(IdxStream::open(path, MAX_FILE_BYTES)?)
}

/// The labels of an opened IDX stream.
fn idx_labels(mut stream: IdxStream) -> Result<Vec<u8>, DataError> {
    let path = stream.path;
    let header = stream.header(LABELS_MAGIC, LABELS_HEADER)?;
    let count = be_u32(&header, 4);
    let labels = stream.body("label", count, u64::from(count))?;
    if let Some(index) = labels.iter().position(|&l| l as usize >= MNIST_CLASSES) {
        return Err(DataError::BadLabel {
            path: path.to_path_buf(),
            index,
            value: labels[index],
        });
    }
    Ok(labels)
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

    #[error(
        "{path} is {kind}, not a file: put the MNIST file itself there, or point `--data-dir` at \
         the folder that holds the four files"
    )]
    NotAFile { path: PathBuf, kind: &'static str },

    #[error(
        "{first} and {second} are two copies of the same MNIST file with different contents, so \
         which one to train on would be a guess: remove (or rename) the one that is wrong"
    )]
    Ambiguous { first: PathBuf, second: PathBuf },

    #[error(
        "{images} holds 0 examples: there is nothing to train or test on; copy the files again \
         from the repository's data/mnist"
    )]
    NoExamples { images: PathBuf },

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

    #[error(
        "{path}: its header promises {count} {kind}s ({expected} bytes of data), more than the \
         {limit} bytes this program reads from one file; the header is corrupt or it is not an \
         MNIST-style file"
    )]
    HeaderTooLarge {
        path: PathBuf,
        kind: &'static str,
        count: u32,
        expected: u64,
        limit: u64,
    },

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
        found: u64,
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
        found: u64,
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

/// Finds the file for base name `name` in `dir` under its accepted spellings: `NAME.gz`,
/// `NAME`, and the same with a dot before "idx" (`train-images.idx3-ubyte`). A path that exists
/// but is not a regular file (a folder, a FIFO, a link that leads nowhere) is an error naming
/// what it is. When several spellings exist, they must hold the same data (as after
/// `gunzip -k`): the first is used; if they differ, the choice would be a guess, so it is an
/// error naming both.
fn find(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    let dotted = name.replacen("-idx", ".idx", 1);
    let tried = [format!("{name}.gz"), name.to_string(), format!("{dotted}.gz"), dotted];
    let mut found = Vec::new();
    for path in tried.iter().map(|n| dir.join(n)) {
        if let Some(kind) = not_a_file(&path) {
            return Err(DataError::NotAFile { path, kind });
        }
        if path.is_file() {
            found.push(path);
        }
    }
    let Some(first) = found.first() else {
        return Err(DataError::FileMissing {
            dir: dir.to_path_buf(),
            tried: tried.to_vec(),
        });
    };
    if let Some(other) = found[1..].iter().find(|other| !same_data(first, other)) {
        return Err(DataError::Ambiguous {
            first: first.clone(),
            second: other.clone(),
        });
    }
    Ok(first.clone())
}

/// What stands at `path` when it exists but is not a regular file (following symbolic links),
/// for messages; None when it is a file or does not exist at all.
fn not_a_file(path: &Path) -> Option<&'static str> {
    let link = std::fs::symlink_metadata(path).ok()?;
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(_) if link.file_type().is_symlink() => {
            return Some("a symbolic link that leads nowhere (dangling, or a loop)")
        }
        Err(_) => return None,
    };
    let kind = meta.file_type();
    #[cfg(unix)]
    use std::os::unix::fs::FileTypeExt;
    #[cfg(not(unix))]
    return (!kind.is_file()).then_some(if kind.is_dir() {
        "a folder"
    } else {
        "not a regular file"
    });
    #[cfg(unix)]
    match () {
        _ if kind.is_file() => None,
        _ if kind.is_dir() => Some("a folder"),
        _ if kind.is_fifo() => Some("a named pipe (FIFO)"),
        _ if kind.is_socket() => Some("a socket"),
        _ if kind.is_block_device() || kind.is_char_device() => Some("a device"),
        _ => Some("not a regular file"),
    }
}

/// Whether two spellings of one IDX file hold the same data once decompressed (both read the
/// same way as the trainer reads them; any read error counts as different).
fn same_data(a: &Path, b: &Path) -> bool {
    let read = |path: &Path| -> Option<Vec<u8>> {
        let mut stream = IdxStream::open(path, MAX_FILE_BYTES).ok()?;
        let mut all = Vec::new();
        (&mut stream.reader).take(MAX_FILE_BYTES).read_to_end(&mut all).ok()?;
        Some(all)
    };
    matches!((read(a), read(b)), (Some(x), Some(y)) if x == y)
}

/// Loads an image file and its label file, and checks they describe the same examples.
fn load_pair(images_path: &Path, labels_path: &Path) -> Result<Dataset, DataError> {
    let images = read_idx_images(images_path)?;
    let labels = read_idx_labels(labels_path)?;
    pair(images, labels, images_path, labels_path)
}

/// [`load_pair`] from the two files' bytes (gzip or raw, told apart as files are), as a web page
/// fetches them; the paths name them in errors.
pub fn dataset_from_bytes(
    images: Vec<u8>,
    labels: Vec<u8>,
    images_path: &Path,
    labels_path: &Path,
) -> Result<Dataset, DataError> {
    let images = idx_images(IdxStream::from_reader(
        images_path,
        io::Cursor::new(images),
        MAX_FILE_BYTES,
    )?)?;
    let labels = idx_labels(IdxStream::from_reader(
        labels_path,
        io::Cursor::new(labels),
        MAX_FILE_BYTES,
    )?)?;
    pair(images, labels, images_path, labels_path)
}

/// Checks that images and labels describe the same examples.
fn pair(
    (images, image_count): (Vec<u8>, usize),
    labels: Vec<u8>,
    images_path: &Path,
    labels_path: &Path,
) -> Result<Dataset, DataError> {
    if image_count != labels.len() {
        return Err(DataError::CountMismatch {
            images: images_path.to_path_buf(),
            image_count,
            labels: labels_path.to_path_buf(),
            label_count: labels.len(),
        });
    }
    if image_count == 0 {
        return Err(DataError::NoExamples {
            images: images_path.to_path_buf(),
        });
    }
    Ok(Dataset {
        images,
        labels,
        features: MNIST_PIXELS,
        classes: MNIST_CLASSES,
    })
}

/// An IDX file opened for reading, decompressed on the fly when it starts with the gzip magic
/// bytes 1f 8b (whatever its name, except that a `.gz` name on a non-gzip file is an error).
struct IdxStream<'p> {
    path: &'p Path,
    reader: Box<dyn Read>,
    gzip: bool,
    /// Most bytes accepted after decompression.
    limit: u64,
}

impl<'p> IdxStream<'p> {
    fn open(path: &'p Path, limit: u64) -> Result<IdxStream<'p>, DataError> {
        if let Some(kind) = not_a_file(path) {
            return Err(DataError::NotAFile {
                path: path.to_path_buf(),
                kind,
            });
        }
        let file = File::open(path).map_err(|source| match source.kind() {
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
        })?;
        IdxStream::from_reader(path, BufReader::new(file), limit)
    }

    /// The stream of an IDX file's contents, `file`, however they were obtained (from disk, or
    /// fetched by a web page); `path` names it in errors.
    fn from_reader(path: &'p Path, mut file: impl BufRead + 'static, limit: u64) -> Result<IdxStream<'p>, DataError> {
        let first = file.fill_buf().map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let named_gz = path.extension().is_some_and(|e| e == "gz");
        let gzip = first.starts_with(&[0x1f, 0x8b]) || (first == [0x1f] && named_gz);
        let reader: Box<dyn Read> = match first {
            [] => {
                return Err(DataError::Empty {
                    path: path.to_path_buf(),
                })
            }
            _ if gzip => Box::new(GzMembers::new(file)),
            _ if named_gz => {
                return Err(DataError::NotGzip {
                    path: path.to_path_buf(),
                    first: first[..first.len().min(2)].to_vec(),
                })
            }
            _ => Box::new(file),
        };
        Ok(IdxStream {
            path,
            reader,
            gzip,
            limit,
        })
    }

    /// A read error: a corrupt gzip stream, or the file itself.
    fn error(&self, source: io::Error) -> DataError {
        let path = self.path.to_path_buf();
        if self.gzip {
            DataError::CorruptGzip { path, source }
        } else {
            DataError::Io { path, source }
        }
    }

    /// Reads up to `limit` bytes (fewer only at the end of the data).
    fn read_up_to(&mut self, limit: u64) -> Result<Vec<u8>, DataError> {
        let mut out = Vec::new();
        match (&mut self.reader).take(limit).read_to_end(&mut out) {
            Ok(_) => Ok(out),
            Err(source) => Err(self.error(source)),
        }
    }

    /// Reads the `len`-byte header of an IDX file whose magic number should be `magic`.
    fn header(&mut self, magic: u32, len: usize) -> Result<Vec<u8>, DataError> {
        let header = self.read_up_to(len as u64)?;
        check_magic(self.path, &header, magic, len)?;
        Ok(header)
    }

    /// Reads the body: exactly `expected` bytes for `count` items of `kind`. Shorter data is
    /// truncated, longer data means a wrong header; neither reads more than the limit allows.
    fn body(&mut self, kind: &'static str, count: u32, expected: u64) -> Result<Vec<u8>, DataError> {
        let path = self.path.to_path_buf();
        let too_large = |limit| DataError::TooLarge {
            path: path.clone(),
            limit,
        };
        if expected > self.limit {
            return Err(DataError::HeaderTooLarge {
                path,
                kind,
                count,
                expected,
                limit: self.limit,
            });
        }
        let body = self.read_up_to(expected + 1)?;
        let found = body.len() as u64;
        if found > self.limit {
            return Err(too_large(self.limit));
        }
        if found < expected {
            return Err(DataError::Truncated {
                path,
                kind,
                count,
                expected,
                found,
            });
        }
        if found > expected {
            // Count the rest without keeping it, up to the limit.
            let rest = io::copy(&mut (&mut self.reader).take(self.limit - found + 1), &mut io::sink())
                .map_err(|source| self.error(source))?;
            if found + rest > self.limit {
                return Err(too_large(self.limit));
            }
            return Err(DataError::TrailingBytes {
                path,
                kind,
                count,
                expected,
                found: found + rest,
            });
        }
        Ok(body)
    }
}

/// The decompressed bytes of a gzip file, as `gzip -d` reads it: every member in turn (a file
/// may be several gzip streams concatenated), then only zero bytes of padding allowed after the
/// last one. Anything else after the data is an error.
struct GzMembers<R: BufRead> {
    member: Option<GzDecoder<R>>,
}

impl<R: BufRead> GzMembers<R> {
    fn new(reader: R) -> GzMembers<R> {
        GzMembers {
            member: Some(GzDecoder::new(reader)),
        }
    }
}

impl<R: BufRead> Read for GzMembers<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(member) = self.member.as_mut() {
            let n = member.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // This member is done: what follows decides.
            let mut rest = self.member.take().expect("a member").into_inner();
            match rest.fill_buf()?.first() {
                None => return Ok(0),
                Some(0x1f) => self.member = Some(GzDecoder::new(rest)),
                Some(0) => {
                    loop {
                        let chunk = rest.fill_buf()?;
                        if chunk.is_empty() {
                            return Ok(0);
                        }
                        if chunk.iter().any(|&b| b != 0) {
                            break;
                        }
                        let len = chunk.len();
                        rest.consume(len);
                    }
                    return Err(trailing_garbage());
                }
                Some(_) => return Err(trailing_garbage()),
            }
        }
        Ok(0)
    }
}

fn trailing_garbage() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "bytes that are neither gzip data nor zero padding follow the last gzip member",
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    /// A label file of `count` labels 0..=9 repeating.
    fn labels(count: u32) -> Vec<u8> {
        let mut bytes = vec![0, 0, 8, 1];
        bytes.extend(count.to_be_bytes());
        bytes.extend((0..count).map(|i| (i % 10) as u8));
        bytes
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// The size cap cannot be reached by a fast test (it is 1 GiB), so it is tested here with a
    /// small limit: a header promising more than the limit is refused before anything is read,
    /// and a stream that goes on past the limit is refused while it streams.
    #[test]
    fn refuses_headers_and_streams_beyond_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "bomb.gz", &gzip(&labels(10_000)));
        let mut stream = IdxStream::open(&path, 9_999).unwrap();
        stream.header(LABELS_MAGIC, LABELS_HEADER).unwrap();
        let err = stream.body("label", 10_000, 10_000).unwrap_err();
        assert!(matches!(err, DataError::HeaderTooLarge { limit: 9_999, .. }), "{err}");

        // A header promising 10 labels, then 10 000 more bytes: counted, not kept, up to the limit.
        let mut bytes = labels(10);
        bytes.extend(vec![0u8; 10_000]);
        let path = write(dir.path(), "long.gz", &gzip(&bytes));
        let mut stream = IdxStream::open(&path, 100_000).unwrap();
        stream.header(LABELS_MAGIC, LABELS_HEADER).unwrap();
        let err = stream.body("label", 10, 10).unwrap_err();
        assert!(matches!(err, DataError::TrailingBytes { found: 10_010, .. }), "{err}");
        let mut stream = IdxStream::open(&path, 5_000).unwrap();
        stream.header(LABELS_MAGIC, LABELS_HEADER).unwrap();
        let err = stream.body("label", 10, 10).unwrap_err();
        assert!(matches!(err, DataError::TooLarge { limit: 5_000, .. }), "{err}");
    }

    /// What `gzip -d` accepts: concatenated members, and zero padding after the last one.
    #[test]
    fn reads_gzip_members_and_zero_padding_like_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let whole = labels(1000);
        let mut members = gzip(&whole[..300]);
        members.extend(gzip(&whole[300..]));
        let path = write(dir.path(), "members.gz", &members);
        assert!(read_idx_labels(&path).unwrap() == whole[8..]);

        let mut padded = gzip(&whole);
        padded.extend(vec![0u8; 20_000]);
        let path = write(dir.path(), "padded.gz", &padded);
        assert!(read_idx_labels(&path).unwrap() == whole[8..]);

        let mut garbage = gzip(&whole);
        garbage.extend([0, 0, 7]);
        let path = write(dir.path(), "garbage.gz", &garbage);
        let err = read_idx_labels(&path).unwrap_err();
        assert!(matches!(err, DataError::CorruptGzip { .. }), "{err}");
        assert!(err.to_string().contains("neither gzip data nor zero padding"), "{err}");
    }

    #[test]
    fn names_what_stands_where_a_file_should_be() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("a-folder");
        std::fs::create_dir(&folder).unwrap();
        let err = IdxStream::open(&folder, 100).err().unwrap();
        assert!(matches!(err, DataError::NotAFile { kind: "a folder", .. }), "{err}");

        let fifo = dir.path().join("a-fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        let err = IdxStream::open(&fifo, 100).err().unwrap();
        assert!(err.to_string().contains("named pipe"), "{err}");

        let looped = dir.path().join("loop");
        std::os::unix::fs::symlink(&looped, &looped).unwrap();
        let err = IdxStream::open(&looped, 100).err().unwrap();
        assert!(err.to_string().contains("symbolic link that leads nowhere"), "{err}");
    }

    #[test]
    fn two_spellings_must_agree() {
        let dir = tempfile::tempdir().unwrap();
        let name = "t10k-labels-idx1-ubyte";
        write(dir.path(), &format!("{name}.gz"), &gzip(&labels(20)));
        write(dir.path(), name, &labels(20));
        assert_eq!(find(dir.path(), name).unwrap(), dir.path().join(format!("{name}.gz")));

        write(dir.path(), name, &labels(21));
        let err = find(dir.path(), name).unwrap_err();
        assert!(matches!(err, DataError::Ambiguous { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains(&format!("{name}.gz")) && message.contains("different contents"),
            "{message}"
        );
    }
}
