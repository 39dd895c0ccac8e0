//! Finding the datasets tuneforge knows by name.
//!
//! Small datasets (digits, biopsy) are committed in the repository's `datasets/` and built
//! into tuneforge too; large ones (Fashion-MNIST) live in a data directory given by
//! `--data-dir` or `TUNEFORGE_DATA`. [`DataDirs`] is that search path; [`DataDirs::open`]
//! opens a [`Known`] dataset from the first directory that has it — a built-in one that none
//! has from its copy in the cache ([`DataDirs::builtin_in`]) — and otherwise fails with
//! [`Error::NotFound`] listing every path it tried.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::idx::{Access, GzCache, IdxDataset};
use crate::{CsvDataset, CsvOptions, Dataset, Error, Result};

/// Fashion-MNIST's class names, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// A dataset tuneforge can find by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Known {
    /// Fashion-MNIST, 60000 training images (IDX, raw or gz).
    FashionMnistTrain,
    /// Fashion-MNIST, 10000 test images.
    FashionMnistTest,
    /// UCI optical digits as bundled with scikit-learn: 1797 rows of 64 pixels (CSV).
    Digits,
    /// Wisconsin breast cancer (R's `MASS::biopsy`): 699 rows, 9 features (CSV, with NAs).
    Biopsy,
}

impl Known {
    /// Every known dataset.
    pub const ALL: [Known; 4] = [Known::FashionMnistTrain, Known::FashionMnistTest, Known::Digits, Known::Biopsy];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Known::FashionMnistTrain => "fashion-mnist-train",
            Known::FashionMnistTest => "fashion-mnist-test",
            Known::Digits => "digits",
            Known::Biopsy => "biopsy",
        }
    }

    /// Parses a command-line name (`fashion-mnist` means the training split).
    pub fn from_name(name: &str) -> Option<Known> {
        match name {
            "fashion-mnist" | "fashion-mnist-train" => Some(Known::FashionMnistTrain),
            "fashion-mnist-test" => Some(Known::FashionMnistTest),
            "digits" => Some(Known::Digits),
            "biopsy" => Some(Known::Biopsy),
            _ => None,
        }
    }

    /// File names relative to a data directory, each with the alternatives tried in order.
    fn files(self) -> Vec<Vec<&'static str>> {
        let idx = |stem: &'static [&'static str; 4]| vec![stem.to_vec()];
        match self {
            Known::FashionMnistTrain => [
                idx(&[
                    "fashion-mnist/train-images-idx3-ubyte",
                    "fashion-mnist/train-images-idx3-ubyte.gz",
                    "train-images-idx3-ubyte",
                    "train-images-idx3-ubyte.gz",
                ]),
                idx(&[
                    "fashion-mnist/train-labels-idx1-ubyte",
                    "fashion-mnist/train-labels-idx1-ubyte.gz",
                    "train-labels-idx1-ubyte",
                    "train-labels-idx1-ubyte.gz",
                ]),
            ]
            .concat(),
            Known::FashionMnistTest => [
                idx(&[
                    "fashion-mnist/t10k-images-idx3-ubyte",
                    "fashion-mnist/t10k-images-idx3-ubyte.gz",
                    "t10k-images-idx3-ubyte",
                    "t10k-images-idx3-ubyte.gz",
                ]),
                idx(&[
                    "fashion-mnist/t10k-labels-idx1-ubyte",
                    "fashion-mnist/t10k-labels-idx1-ubyte.gz",
                    "t10k-labels-idx1-ubyte",
                    "t10k-labels-idx1-ubyte.gz",
                ]),
            ]
            .concat(),
            Known::Digits => vec![vec!["digits.csv", "digits/digits.csv"]],
            Known::Biopsy => vec![vec!["biopsy.csv", "biopsy/biopsy.csv"]],
        }
    }

    /// The CSV file built into tuneforge for this dataset (digits, biopsy: the repository's
    /// `datasets/`, 296 KB together), used when no data directory has it; `None` for
    /// Fashion-MNIST.
    pub fn builtin(self) -> Option<&'static [u8]> {
        match self {
            Known::Digits => Some(include_bytes!("../../../datasets/digits.csv")),
            Known::Biopsy => Some(include_bytes!("../../../datasets/biopsy.csv")),
            Known::FashionMnistTrain | Known::FashionMnistTest => None,
        }
    }

    /// The CSV options this dataset is read with.
    pub fn csv_options(self) -> Option<CsvOptions> {
        match self {
            Known::Digits => Some(CsvOptions::with_label("label")),
            Known::Biopsy => Some(CsvOptions { drop: vec!["ID".into()], ..CsvOptions::with_label("class") }),
            _ => None,
        }
    }
}

impl std::fmt::Display for Known {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The ordered list of directories searched for datasets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDirs {
    dirs: Vec<PathBuf>,
    builtin: PathBuf,
}

impl DataDirs {
    /// Exactly these directories, in order; a built-in dataset none of them has is written
    /// into `builtin/` of the default [`GzCache`] location.
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        DataDirs { dirs, builtin: GzCache::default_location().dir().join("builtin") }
    }

    /// Where a built-in dataset ([`Known::builtin`]) that no directory has is written to be
    /// read (`DIR/digits.HASH.csv`, once, through a temporary file and a rename): the
    /// `builtin/` folder of the cache given by `--cache-dir`, say.
    pub fn builtin_in(mut self, dir: impl Into<PathBuf>) -> Self {
        self.builtin = dir.into();
        self
    }

    /// The usual search path: `explicit` (a `--data-dir` flag) if given; else the
    /// directories in `TUNEFORGE_DATA` (separated like `PATH`); else `datasets`.
    pub fn resolve(explicit: Option<&Path>) -> Self {
        if let Some(dir) = explicit {
            return DataDirs::new(vec![dir.to_path_buf()]);
        }
        match std::env::var_os("TUNEFORGE_DATA").filter(|v| !v.is_empty()) {
            Some(v) => DataDirs::new(std::env::split_paths(&v).collect()),
            None => DataDirs::new(vec![PathBuf::from("datasets")]),
        }
    }

    /// The directories, in search order.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The files of `dataset` (one path per file), from the first directory that has all
    /// of them; for a built-in dataset that none has, its copy in the cache.
    pub fn locate(&self, dataset: Known) -> Result<Vec<PathBuf>> {
        let mut searched = Vec::new();
        for dir in &self.dirs {
            let mut found = Vec::new();
            for alternatives in dataset.files() {
                let hit = alternatives.iter().map(|rel| dir.join(rel)).find(|p| {
                    searched.push(p.clone());
                    p.is_file()
                });
                match hit {
                    Some(p) => found.push(p),
                    None => break,
                }
            }
            if found.len() == dataset.files().len() {
                return Ok(found);
            }
        }
        if let Some(bytes) = dataset.builtin() {
            return Ok(vec![self.write_builtin(dataset, bytes)?]);
        }
        let hint = "Fashion-MNIST is not committed: put its four IDX files (raw or .gz) in DIR/fashion-mnist/ \
                    and pass --data-dir DIR or set TUNEFORGE_DATA=DIR (in this repository's checkout: \
                    TUNEFORGE_DATA=../shared/datasets)";
        Err(Error::NotFound { name: dataset.name().to_string(), searched, hint: hint.to_string() })
    }

    /// `true` if `path` is a built-in dataset's copy written by [`locate`](Self::locate).
    pub fn is_builtin(&self, path: &Path) -> bool {
        path.parent() == Some(self.builtin.as_path())
    }

    /// The copy of a built-in dataset in the cache, written once (named by its content's
    /// hash: a later version's data is another file).
    fn write_builtin(&self, dataset: Known, bytes: &[u8]) -> Result<PathBuf> {
        let hash = xxhash_rust::xxh3::xxh3_128(bytes);
        let path = self.builtin.join(format!("{}.{hash:032x}.csv", dataset.name()));
        if path.is_file() {
            return Ok(path);
        }
        std::fs::create_dir_all(&self.builtin).map_err(|e| Error::io(&self.builtin, e))?;
        crate::atomic::write_atomic(&path, bytes).map_err(|e| Error::io(&path, e))?;
        tracing::debug!(dataset = dataset.name(), path = %path.display(), "built-in dataset written");
        Ok(path)
    }

    /// Opens `dataset`. IDX files are inflated once into `cache` and memory-mapped.
    pub fn open(&self, dataset: Known, cache: &GzCache) -> Result<Arc<dyn Dataset>> {
        let files = self.locate(dataset)?;
        match dataset.csv_options() {
            Some(opts) => Ok(Arc::new(CsvDataset::open(&files[0], &opts)?)),
            None => {
                let names = FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect();
                // SAFETY: `.gz` inputs are mapped through cache files that are written once
                // and renamed into place, never modified. Raw IDX files in a data directory
                // are inputs that tuneforge only reads; modifying them while a run uses them
                // is outside the contract, as documented on `IdxArray::open_mapped`.
                let ds = unsafe { IdxDataset::open(&files[0], &files[1], names, cache, Access::Mmap)? };
                Ok(Arc::new(ds))
            }
        }
    }
}
