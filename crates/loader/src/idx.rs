//! IDX files (the MNIST / Fashion-MNIST format), raw or gzip-compressed.
//!
//! An IDX file is a big-endian header — two zero bytes, a type byte (`0x08` = unsigned
//! byte, the only type used by image datasets), a rank byte, then `rank` 32-bit dimensions —
//! followed by the data. [`IdxArray`] validates all of it against the file's length.
//!
//! A `.gz` file is inflated once into a cache file named after the hash of its compressed
//! bytes ([`GzCache`]); the cache file is written to a temporary name, synced and renamed,
//! so it is either complete or absent. Later opens map the cache file directly.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::{Dataset, Error, Result};

/// Magic number of an IDX file of unsigned bytes with rank 3 (images: n × rows × cols).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with rank 1 (labels: n).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// The bytes of a file: mapped or owned.
enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// How an IDX file's bytes are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read the whole file into memory (safe; costs a copy).
    Read,
    /// Memory-map the file (or its inflated cache). See [`IdxArray::open_mapped`] for the
    /// contract.
    Mmap,
}

/// A validated IDX array of unsigned bytes.
pub struct IdxArray {
    path: PathBuf,
    name: PathBuf,
    bytes: Bytes,
    dims: Vec<usize>,
    data_offset: usize,
}

impl std::fmt::Debug for IdxArray {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdxArray")
            .field("path", &self.path)
            .field("dims", &self.dims)
            .field("mapped", &matches!(self.bytes, Bytes::Mapped(_)))
            .finish()
    }
}

impl IdxArray {
    /// Reads and validates an IDX file into memory. A `.gz` file is inflated through
    /// `cache` (pass `None` to inflate in memory without caching).
    pub fn open(path: &Path, expected_magic: u32, cache: Option<&GzCache>) -> Result<Self> {
        let (file_path, bytes) = if is_gz(path) {
            match cache {
                Some(cache) => {
                    let cached = cache.inflate(path)?;
                    let bytes = std::fs::read(&cached).map_err(|e| Error::io(&cached, e))?;
                    (cached, bytes)
                }
                None => (path.to_path_buf(), inflate_to_vec(path)?),
            }
        } else {
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            (path.to_path_buf(), bytes)
        };
        Self::from_bytes(file_path, shown(path), Bytes::Owned(bytes), expected_magic)
    }

    /// Memory-maps and validates an IDX file. A `.gz` file is inflated once into `cache`
    /// and the cache file is mapped.
    ///
    /// # Safety
    /// The mapped file must not be truncated or modified by anyone while the returned
    /// value (or anything built from it) is alive; otherwise reads are undefined behaviour
    /// (typically `SIGBUS`). Cache files written by [`GzCache`] are never modified after
    /// they are renamed into place, so for `.gz` inputs this only requires that nobody
    /// else writes into the cache directory. For raw `.idx` files it is the caller's
    /// promise about that file.
    pub unsafe fn open_mapped(path: &Path, expected_magic: u32, cache: &GzCache) -> Result<Self> {
        let file_path = if is_gz(path) { cache.inflate(path)? } else { path.to_path_buf() };
        let file = File::open(&file_path).map_err(|e| Error::io(&file_path, e))?;
        // SAFETY: the caller promises the file is not modified while mapped (see above).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&file_path, e))?;
        Self::from_bytes(file_path, shown(path), Bytes::Mapped(map), expected_magic)
    }

    /// Opens with the given [`Access`].
    ///
    /// # Safety
    /// With [`Access::Mmap`], the contract of [`IdxArray::open_mapped`].
    pub unsafe fn open_with(path: &Path, magic: u32, cache: &GzCache, access: Access) -> Result<Self> {
        match access {
            Access::Read => Self::open(path, magic, Some(cache)),
            // SAFETY: forwarded to the caller.
            Access::Mmap => unsafe { Self::open_mapped(path, magic, cache) },
        }
    }

    fn from_bytes(path: PathBuf, name: PathBuf, bytes: Bytes, expected_magic: u32) -> Result<Self> {
        let (dims, data_offset) = parse_header(&name, &bytes, expected_magic)?;
        Ok(IdxArray { path, name, bytes, dims, data_offset })
    }

    /// The file the bytes come from (the cache file for a `.gz` input).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file as errors name it: the path it was opened with, a `.gz` one as `PATH
    /// (inflated)` (offsets are in its inflated bytes), never the cache file.
    pub fn name(&self) -> &Path {
        &self.name
    }

    /// Dimensions from the header.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// The data after the header.
    pub fn data(&self) -> &[u8] {
        &self.bytes[self.data_offset..]
    }

    /// Byte offset of the data in the file.
    pub fn data_offset(&self) -> usize {
        self.data_offset
    }

    /// `true` if the bytes are memory-mapped.
    pub fn is_mapped(&self) -> bool {
        matches!(self.bytes, Bytes::Mapped(_))
    }
}

/// An IDX array read from its file a range of rows at a time, never whole: for files larger
/// than memory (`predict` over an `idx:PATH`), without the mapping contract of
/// [`IdxArray::open_mapped`]. The header is validated against the file's length as by
/// [`IdxArray::open`]; a file cut short after that is an I/O error naming it, not a crash.
///
/// ```
/// use tuneforge_loader::idx::{IMAGES_MAGIC, IdxReader};
/// use tuneforge_loader::GzCache;
///
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("images.idx");
/// // Three 1×2 images: [0, 1], [2, 3], [4, 5].
/// let mut bytes = IMAGES_MAGIC.to_be_bytes().to_vec();
/// for d in [3u32, 1, 2] {
///     bytes.extend_from_slice(&d.to_be_bytes());
/// }
/// bytes.extend_from_slice(&[0, 1, 2, 3, 4, 5]);
/// std::fs::write(&path, &bytes).unwrap();
///
/// let mut images = IdxReader::open(&path, IMAGES_MAGIC, &GzCache::new(dir.path().join("cache")))?;
/// assert_eq!((images.len(), images.row_len()), (3, 2));
/// let mut rows = Vec::new();
/// images.read_rows(1, 3, &mut rows)?;
/// assert_eq!(rows, [2, 3, 4, 5]);
/// # Ok::<(), tuneforge_loader::Error>(())
/// ```
#[derive(Debug)]
pub struct IdxReader {
    path: PathBuf,
    name: PathBuf,
    file: File,
    dims: Vec<usize>,
    data_offset: usize,
}

impl IdxReader {
    /// Opens `path` and validates its header; a `.gz` file is inflated once into `cache`
    /// and the cache file is read.
    pub fn open(path: &Path, expected_magic: u32, cache: &GzCache) -> Result<Self> {
        let name = shown(path);
        let path = if is_gz(path) { cache.inflate(path)? } else { path.to_path_buf() };
        let file = File::open(&path).map_err(|e| Error::io(&name, e))?;
        let len = file.metadata().map_err(|e| Error::io(&name, e))?.len();
        // The longest header: magic and 255 dimensions.
        let mut header = Vec::with_capacity(4 + 4 * 255);
        (&file).take(4 + 4 * 255).read_to_end(&mut header).map_err(|e| Error::io(&name, e))?;
        let (dims, data_offset) = parse_header_of(&name, &header, len, expected_magic)?;
        if dims.is_empty() {
            return Err(Error::IdxDims { path: name, dims: Vec::new() });
        }
        Ok(IdxReader { path, name, file, dims, data_offset })
    }

    /// The file read (the cache file for a `.gz` input).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file as errors name it (see [`IdxArray::name`]).
    pub fn name(&self) -> &Path {
        &self.name
    }

    /// Dimensions from the header.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// Number of rows (the first dimension).
    pub fn len(&self) -> usize {
        self.dims[0]
    }

    /// `true` if the array has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes per row (the product of the other dimensions).
    pub fn row_len(&self) -> usize {
        self.dims[1..].iter().product()
    }

    /// Replaces `out`'s contents with rows `start..end` (row-major); `end` is clamped to
    /// [`len`](Self::len).
    pub fn read_rows(&mut self, start: usize, end: usize, out: &mut Vec<u8>) -> Result<()> {
        let end = end.min(self.len());
        let start = start.min(end);
        let row = self.row_len();
        out.clear();
        out.resize((end - start) * row, 0);
        let offset = (self.data_offset + start * row) as u64;
        self.file.seek(SeekFrom::Start(offset)).map_err(|e| Error::io(&self.name, e))?;
        self.file.read_exact(out).map_err(|e| Error::io(&self.name, e))
    }
}

/// Parses and validates an IDX header against the whole file's bytes; returns the
/// dimensions and the data offset.
pub fn parse_header(path: &Path, bytes: &[u8], expected_magic: u32) -> Result<(Vec<usize>, usize)> {
    parse_header_of(path, bytes, bytes.len() as u64, expected_magic)
}

/// [`parse_header`] of a file of `len` bytes whose first bytes are `bytes` (at least its
/// header's, or the whole file).
fn parse_header_of(path: &Path, bytes: &[u8], len: u64, expected_magic: u32) -> Result<(Vec<usize>, usize)> {
    let truncated = |what: String, offset: u64, needed: u64| Error::Truncated {
        path: path.to_path_buf(),
        what,
        offset,
        needed,
        len,
    };
    let Some(magic) = read_u32(bytes, 0) else {
        return Err(truncated("magic number".into(), 0, 4));
    };
    if magic != expected_magic {
        return Err(Error::IdxMagic { path: path.to_path_buf(), found: magic, expected: expected_magic });
    }
    let rank = (magic & 0xff) as usize;
    let mut dims = Vec::with_capacity(rank);
    for d in 0..rank {
        let offset = 4 + 4 * d;
        let Some(v) = read_u32(bytes, offset) else {
            return Err(truncated(format!("dimension {d}"), offset as u64, 4));
        };
        dims.push(v as u64);
    }
    let data_offset = 4 + 4 * rank;
    let row_dims_zero = dims.iter().skip(1).any(|&d| d == 0);
    let size = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
    let Some(size) = size.filter(|_| !row_dims_zero) else {
        return Err(Error::IdxDims { path: path.to_path_buf(), dims });
    };
    let available = len - data_offset as u64;
    if available < size {
        return Err(truncated("data".into(), data_offset as u64, size));
    }
    if available > size {
        return Err(Error::TrailingBytes {
            path: path.to_path_buf(),
            offset: data_offset as u64 + size,
            extra: available - size,
        });
    }
    let dims = dims.into_iter().map(|d| d as usize).collect();
    Ok((dims, data_offset))
}

fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let b = bytes.get(offset..offset + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// `path` as errors about its contents name it: a `.gz` file as `PATH (inflated)`.
fn shown(path: &Path) -> PathBuf {
    if is_gz(path) { PathBuf::from(format!("{} (inflated)", path.display())) } else { path.to_path_buf() }
}

fn is_gz(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz"))
}

/// A reader that counts the bytes read through it (to locate gzip errors).
struct Counting<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Inflates `path` into `out`; returns the number of inflated bytes.
fn inflate_into(path: &Path, out: &mut impl Write, out_path: &Path) -> Result<u64> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let counting = Counting { inner: BufReader::with_capacity(1 << 16, file), count: 0 };
    let mut decoder = flate2::read::GzDecoder::new(counting);
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                let offset = decoder.get_ref().count;
                return Err(Error::Gzip { path: path.to_path_buf(), offset, source });
            }
        };
        out.write_all(&buf[..n]).map_err(|e| Error::io(out_path, e))?;
        total += n as u64;
    }
    // A file that is not gzip at all inflates to nothing without complaint from some
    // decoders; an empty gzip stream is also useless. Both are reported.
    if decoder.get_ref().count == 0 {
        return Err(Error::Gzip {
            path: path.to_path_buf(),
            offset: 0,
            source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "empty file"),
        });
    }
    Ok(total)
}

fn inflate_to_vec(path: &Path) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    inflate_into(path, &mut out, path)?;
    Ok(out)
}

/// A directory of inflated `.gz` files, keyed by the content hash of the compressed file.
///
/// The default location is `$TUNEFORGE_CACHE`, else `$XDG_CACHE_HOME/tuneforge`, else
/// `$HOME/.cache/tuneforge`, else a `tuneforge-cache` folder in the system temp dir.
#[derive(Debug, Clone)]
pub struct GzCache {
    dir: PathBuf,
}

impl GzCache {
    /// A cache in `dir` (created on first use).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        GzCache { dir: dir.into() }
    }

    /// The default cache location (see the type's documentation).
    pub fn default_location() -> Self {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let dir = env("TUNEFORGE_CACHE")
            .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("tuneforge")))
            .or_else(|| env("HOME").map(|d| d.join(".cache").join("tuneforge")))
            .unwrap_or_else(|| std::env::temp_dir().join("tuneforge-cache"));
        GzCache { dir }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the inflated copy of `gz` lives (whether or not it exists yet).
    pub fn cached_path(&self, gz: &Path) -> Result<PathBuf> {
        let hash = hash_file(gz)?;
        let stem = gz.file_stem().and_then(|s| s.to_str()).unwrap_or("data");
        Ok(self.dir.join(format!("{stem}.{hash:032x}")))
    }

    /// Returns the path of the inflated copy of `gz`, inflating it first if needed.
    /// The copy is written under a temporary name, synced, then renamed into place.
    pub fn inflate(&self, gz: &Path) -> Result<PathBuf> {
        let target = self.cached_path(gz)?;
        if target.is_file() {
            tracing::debug!(gz = %gz.display(), cache = %target.display(), "gz cache hit");
            return Ok(target);
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".inflating-")
            .tempfile_in(&self.dir)
            .map_err(|e| Error::io(&self.dir, e))?;
        let tmp_path = tmp.path().to_path_buf();
        let n = {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
            let n = inflate_into(gz, &mut w, &tmp_path)?;
            w.flush().map_err(|e| Error::io(&tmp_path, e))?;
            n
        };
        tmp.as_file().sync_all().map_err(|e| Error::io(&tmp_path, e))?;
        tmp.persist(&target).map_err(|e| Error::io(&target, e.error))?;
        tracing::info!(gz = %gz.display(), cache = %target.display(), bytes = n, "inflated into cache");
        Ok(target)
    }
}

fn hash_file(path: &Path) -> Result<u128> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.digest128())
}

/// Images and labels from a pair of IDX files, as a [`Dataset`].
#[derive(Debug)]
pub struct IdxDataset {
    images: IdxArray,
    labels: IdxArray,
    feature_shape: Vec<usize>,
    label_names: Vec<String>,
}

impl IdxDataset {
    /// Opens and cross-validates an image file (rank 3) and a label file (rank 1) with
    /// `label_names.len()` classes.
    ///
    /// # Safety
    /// With [`Access::Mmap`], the contract of [`IdxArray::open_mapped`] for both files.
    pub unsafe fn open(
        images: &Path,
        labels: &Path,
        label_names: Vec<String>,
        cache: &GzCache,
        access: Access,
    ) -> Result<Self> {
        // SAFETY: forwarded to the caller.
        let images_arr = unsafe { IdxArray::open_with(images, IMAGES_MAGIC, cache, access)? };
        // SAFETY: forwarded to the caller.
        let labels_arr = unsafe { IdxArray::open_with(labels, LABELS_MAGIC, cache, access)? };
        Self::from_arrays(images_arr, labels_arr, label_names)
    }

    /// Cross-validates already opened arrays.
    pub fn from_arrays(images: IdxArray, labels: IdxArray, label_names: Vec<String>) -> Result<Self> {
        if images.dims().len() < 2 || labels.dims().len() != 1 {
            return Err(Error::Invalid {
                what: "IDX pair",
                why: format!(
                    "{} has rank {} (need at least 2) and {} has rank {} (need 1)",
                    images.name().display(),
                    images.dims().len(),
                    labels.name().display(),
                    labels.dims().len()
                ),
            });
        }
        let (n_images, n_labels) = (images.dims()[0], labels.dims()[0]);
        if n_images != n_labels {
            return Err(Error::CountMismatch {
                images: images.name().to_path_buf(),
                image_count: n_images,
                labels: labels.name().to_path_buf(),
                label_count: n_labels,
            });
        }
        let classes = label_names.len();
        if let Some(row) = labels.data().iter().position(|&l| l as usize >= classes) {
            return Err(Error::LabelOutOfRange {
                path: labels.name().to_path_buf(),
                row,
                offset: (labels.data_offset() + row) as u64,
                label: labels.data()[row] as u64,
                classes,
            });
        }
        let feature_shape = images.dims()[1..].to_vec();
        Ok(IdxDataset { images, labels, feature_shape, label_names })
    }

    /// The image array.
    pub fn images(&self) -> &IdxArray {
        &self.images
    }

    /// The raw label bytes.
    pub fn label_bytes(&self) -> &[u8] {
        self.labels.data()
    }
}

impl Dataset for IdxDataset {
    fn len(&self) -> usize {
        self.labels.dims()[0]
    }

    fn feature_shape(&self) -> &[usize] {
        &self.feature_shape
    }

    fn label_names(&self) -> &[String] {
        &self.label_names
    }

    fn label(&self, row: usize) -> u32 {
        self.labels.data()[row] as u32
    }

    fn read_rows(&self, start: usize, end: usize, out: &mut [f32]) -> Result<()> {
        let f = self.feature_len();
        let src = &self.images.data()[start * f..end * f];
        assert_eq!(out.len(), src.len(), "read_rows: output length");
        for (o, &b) in out.iter_mut().zip(src) {
            *o = b as f32;
        }
        Ok(())
    }

    fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0usize; self.num_classes()];
        for &l in self.labels.data() {
            counts[l as usize] += 1;
        }
        counts
    }
}
