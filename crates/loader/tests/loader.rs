//! Integration tests of tuneforge-loader: real datasets from ../shared/datasets and the
//! committed datasets/, every error path with crafted bad files, batching properties.

// Test helpers outside #[test] fns unwrap too; a panic is the failure report here.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use tuneforge_loader::idx::{IMAGES_MAGIC, LABELS_MAGIC};
use tuneforge_loader::*;

#[path = "loader/text.rs"]
mod text;

/// `TUNEFORGE_DATA`, else the workplace's `../shared/datasets` next to the repository.
fn shared_data() -> PathBuf {
    let dir = std::env::var_os("TUNEFORGE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets"));
    assert!(
        dir.join("fashion-mnist").is_dir(),
        "real-data tests need Fashion-MNIST: {} has no fashion-mnist/ (set TUNEFORGE_DATA)",
        dir.display()
    );
    dir
}

fn repo_datasets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets")
}

/// A gz cache shared by the tests of this binary (inflating once per `cargo test`).
fn shared_cache() -> GzCache {
    GzCache::new(Path::new(env!("CARGO_TARGET_TMPDIR")).join("tuneforge-gz-cache"))
}

fn fmnist(known: Known) -> Arc<dyn Dataset> {
    DataDirs::new(vec![shared_data()]).open(known, &shared_cache()).unwrap()
}

// ---------------------------------------------------------------- real data

#[test]
fn fashion_mnist_loads_with_the_published_shape() {
    let train = fmnist(Known::FashionMnistTrain);
    assert_eq!(train.len(), 60_000);
    assert_eq!(train.feature_shape(), [28, 28]);
    assert_eq!(train.num_classes(), 10);
    assert_eq!(train.label_names()[9], "Ankle boot");
    assert_eq!(train.class_counts(), vec![6000; 10]);
    let test = fmnist(Known::FashionMnistTest);
    assert_eq!(test.len(), 10_000);
    assert_eq!(test.class_counts(), vec![1000; 10]);
    // Pixels are bytes: every value an integer in 0..=255, and images are not blank.
    let mut row = vec![0f32; 784];
    train.read_row(12_345, &mut row).unwrap();
    assert!(row.iter().all(|&v| (0.0..=255.0).contains(&v) && v.fract() == 0.0));
    assert!(row.iter().filter(|&&v| v > 0.0).count() > 50);
}

#[test]
fn gz_is_inflated_once_into_an_atomic_cache_and_mapped() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = GzCache::new(tmp.path().join("cache"));
    let gz = shared_data().join("fashion-mnist/t10k-labels-idx1-ubyte.gz");
    let first = cache.inflate(&gz).unwrap();
    let meta1 = std::fs::metadata(&first).unwrap();
    assert_eq!(meta1.len(), 8 + 10_000);
    let second = cache.inflate(&gz).unwrap();
    assert_eq!(first, second);
    assert_eq!(std::fs::metadata(&second).unwrap().modified().unwrap(), meta1.modified().unwrap());
    // Nothing but the finished file is left in the cache directory.
    let names: Vec<_> = std::fs::read_dir(cache.dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "{names:?}");
    // SAFETY: the cache file is ours and nobody modifies it during the test.
    let mapped = unsafe { IdxArray::open_mapped(&gz, LABELS_MAGIC, &cache) }.unwrap();
    assert!(mapped.is_mapped());
    let read = IdxArray::open(&gz, LABELS_MAGIC, None).unwrap();
    assert!(!read.is_mapped());
    assert_eq!(mapped.data(), read.data());
    assert_eq!(mapped.dims(), [10_000]);
}

#[test]
fn idx_reader_reads_fashion_mnist_by_row_ranges_as_one_read() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = GzCache::new(tmp.path().join("cache"));
    let gz = shared_data().join("fashion-mnist/t10k-images-idx3-ubyte.gz");
    let whole = IdxArray::open(&gz, IMAGES_MAGIC, None).unwrap();
    let mut reader = IdxReader::open(&gz, IMAGES_MAGIC, &cache).unwrap();
    assert_eq!((reader.dims(), reader.len(), reader.row_len()), (&[10_000, 28, 28][..], 10_000, 784));
    assert!(reader.path().starts_with(cache.dir()), "{}", reader.path().display());
    for step in [1, 7, 4096, 10_000, 20_000] {
        let (mut joined, mut chunk) = (Vec::new(), Vec::new());
        // Only the first and last few hundred single rows: the ranges are what is tested.
        let starts: Vec<usize> =
            (0..10_000).step_by(step).filter(|&s| step > 1 || !(300..9_700).contains(&s)).collect();
        for &start in &starts {
            reader.read_rows(start, start + step, &mut chunk).unwrap();
            assert_eq!(chunk.len(), (start + step).min(10_000).saturating_sub(start) * 784, "step {step} at {start}");
            assert_eq!(chunk[..], whole.data()[start * 784..start * 784 + chunk.len()], "step {step} at {start}");
            joined.extend_from_slice(&chunk);
        }
        if step > 1 {
            assert_eq!(joined, whole.data(), "step {step}");
        }
    }
    // Past the end: nothing (and what `out` held is gone).
    let mut rows = vec![1u8];
    reader.read_rows(10_000, 10_005, &mut rows).unwrap();
    assert!(rows.is_empty());
}

#[test]
fn idx_reader_refuses_what_idx_array_refuses_and_a_file_cut_later_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = GzCache::new(tmp.path().join("cache"));
    let images = idx_bytes(IMAGES_MAGIC, &[3, 2, 2], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    let mut long = images.clone();
    long.extend_from_slice(&[1, 2, 3]);
    let mut cases = vec![
        ("labels", idx_bytes(LABELS_MAGIC, &[3], &[0, 1, 2])),
        ("long", long),
        ("huge", idx_bytes(IMAGES_MAGIC, &[u32::MAX, u32::MAX, u32::MAX], &[])),
        ("zero-width", idx_bytes(IMAGES_MAGIC, &[3, 0, 2], &[])),
    ];
    for cut in [0usize, 2, 4, 7, 12, 15, 16, 20, images.len() - 1] {
        cases.push(("cut", images[..cut].to_vec()));
    }
    for (i, (name, bytes)) in cases.iter().enumerate() {
        for gzipped in [false, true] {
            let file = format!("{name}-{i}{}", if gzipped { ".gz" } else { "" });
            let p = write(tmp.path(), &file, &if gzipped { gz(bytes) } else { bytes.clone() });
            let array = IdxArray::open(&p, IMAGES_MAGIC, Some(&cache)).unwrap_err().to_string();
            let reader = IdxReader::open(&p, IMAGES_MAGIC, &cache).unwrap_err().to_string();
            assert_eq!(reader, array, "{file}");
            // The file given, not the cache it was inflated into.
            let named = if gzipped { format!("{} (inflated): ", p.display()) } else { format!("{}: ", p.display()) };
            assert!(reader.starts_with(&named) && !reader.contains("cache"), "{reader}");
        }
    }
    let err = IdxReader::open(&tmp.path().join("nope"), IMAGES_MAGIC, &cache).unwrap_err();
    assert!(matches!(err, Error::Io { .. }) && err.to_string().contains("nope"), "{err}");

    // Cut short after it was opened: rows still there read, the rest is an error naming it.
    let p = write(tmp.path(), "shrinks", &images);
    let mut reader = IdxReader::open(&p, IMAGES_MAGIC, &cache).unwrap();
    std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(16 + 6).unwrap();
    let mut rows = Vec::new();
    reader.read_rows(0, 1, &mut rows).unwrap();
    assert_eq!(rows, [0, 1, 2, 3]);
    let err = reader.read_rows(1, 3, &mut rows).unwrap_err();
    assert!(matches!(err, Error::Io { .. }) && err.to_string().contains("shrinks"), "{err}");
}

#[test]
fn digits_and_biopsy_csv_load_with_the_right_shapes() {
    let dirs = DataDirs::new(vec![repo_datasets()]);
    let cache = shared_cache();
    let digits = dirs.open(Known::Digits, &cache).unwrap();
    assert_eq!((digits.len(), digits.feature_shape(), digits.num_classes()), (1797, &[64][..], 10));
    // scikit-learn's load_digits() class counts.
    assert_eq!(digits.class_counts(), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]);

    let biopsy = read_csv(&repo_datasets().join("biopsy.csv"), &Known::Biopsy.csv_options().unwrap()).unwrap();
    assert_eq!(biopsy.table.n_rows, 699);
    let names: Vec<_> = biopsy.table.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["V1", "V2", "V3", "V4", "V5", "V6", "V7", "V8", "V9"]);
    let missing: Vec<_> = biopsy.table.missing_counts().into_iter().filter(|(_, n)| *n > 0).collect();
    assert_eq!(missing, [("V6", 16)]);
    assert_eq!(biopsy.label_names, ["benign", "malignant"]);
    assert_eq!(biopsy.labels.iter().filter(|&&l| l == 1).count(), 241);
    let row_names = biopsy.table.row_names.as_ref().unwrap();
    assert_eq!((row_names[0].as_str(), row_names[698].as_str()), ("1", "699"));
    // The header alone: the row-name column (empty name), the ID column the options drop,
    // the features, the label column.
    let header = tuneforge_loader::read_csv_header(&repo_datasets().join("biopsy.csv"), b',').unwrap();
    assert_eq!(&header[..2], ["", "ID"]);
    assert_eq!(&header[2..11], names);
    assert_eq!(header[11..], ["class"]);
    let empty = tempfile::NamedTempFile::new().unwrap();
    let e = tuneforge_loader::read_csv_header(empty.path(), b',').unwrap_err().to_string();
    assert!(e.contains("no header row"), "{e}");
    let v6 = biopsy.table.column("V6").unwrap();
    let ColumnValues::Numeric(values) = &v6.values else { panic!("V6 should be numeric") };
    assert_eq!(values.iter().filter(|v| v.is_nan()).count(), 16);
    assert!(values.iter().filter(|v| !v.is_nan()).all(|&v| (1.0..=10.0).contains(&v)));
}

/// The values of a table's rows as text-free numbers: numeric columns as they are,
/// categorical ones by level name (chunks have levels of their own).
fn rows_of(data: &CsvData) -> Vec<Vec<String>> {
    (0..data.table.n_rows)
        .map(|r| {
            let mut row: Vec<String> = data
                .table
                .columns
                .iter()
                .map(|c| match &c.values {
                    ColumnValues::Numeric(v) => format!("{:?}", v[r]),
                    ColumnValues::Categorical { levels, codes } => {
                        format!("{:?}", codes[r].map(|c| &levels[c as usize]))
                    }
                })
                .collect();
            if !data.labels.is_empty() {
                row.push(data.label_names[data.labels[r] as usize].clone());
            }
            if let Some(names) = &data.table.row_names {
                row.push(names[r].clone());
            }
            row
        })
        .collect()
}

/// Read a chunk at a time, biopsy (row names, a dropped column, missing values, a label)
/// and digits give the rows of one read, in order, in chunks of the size asked for.
#[test]
fn csv_read_in_chunks_equals_one_read() {
    for (name, options) in
        [("biopsy.csv", Known::Biopsy.csv_options().unwrap()), ("digits.csv", Known::Digits.csv_options().unwrap())]
    {
        let path = repo_datasets().join(name);
        let whole = read_csv(&path, &options).unwrap();
        for rows in [1, 7, 100, 699, 5000] {
            let chunks = read_csv_chunks(&path, &options, rows).unwrap();
            assert_eq!(chunks.header(), tuneforge_loader::read_csv_header(&path, b',').unwrap());
            let chunks: Vec<CsvData> = chunks.map(Result::unwrap).collect();
            assert_eq!(chunks.len(), whole.table.n_rows.div_ceil(rows), "{name} by {rows}");
            assert!(chunks.iter().rev().skip(1).all(|c| c.table.n_rows == rows), "{name} by {rows}");
            let joined: Vec<Vec<String>> = chunks.iter().flat_map(rows_of).collect();
            assert_eq!(joined, rows_of(&whole), "{name} by {rows}");
            let missing: usize = chunks.iter().flat_map(|c| c.table.columns.iter().map(|c| c.missing)).sum();
            assert_eq!(missing, whole.table.columns.iter().map(|c| c.missing).sum::<usize>());
        }
    }
}

/// A bad row deep in the file is named by its line in the file, after the chunks before it;
/// a header without rows is one error; kinds decided in one chunk hold in the next.
#[test]
fn csv_chunks_name_lines_in_the_whole_file_and_keep_kinds() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("t.csv");
    let mut text = String::from("a,b,label\n");
    for i in 0..10 {
        text += &format!("{i},x{i},{}\n", i % 2);
    }
    text += "3,y,1\n7,abc,0,extra\n";
    std::fs::write(&path, &text).unwrap();
    let options = CsvOptions::with_label("label");
    let whole = read_csv(&path, &options).unwrap_err().to_string();
    let mut chunks = read_csv_chunks(&path, &options, 4).unwrap();
    // Rows 1-8 in two chunks; the third holds the bad line and is the error.
    let firsts: Vec<usize> = chunks.by_ref().take(2).map(|c| c.unwrap().table.n_rows).collect();
    assert_eq!(firsts, [4, 4]);
    let e = chunks.next().unwrap().unwrap_err().to_string();
    assert_eq!(e, whole);
    assert!(e.contains("t.csv:13"), "{e}");
    assert!(chunks.next().is_none(), "nothing after an error");

    // "a" is numeric from the first chunk on: a word in a later chunk is an error there.
    std::fs::write(&path, "a,label\nNA,0\n1,1\n2,0\nword,1\n").unwrap();
    let got: Vec<_> = read_csv_chunks(&path, &options, 3).unwrap().collect();
    assert!(got[0].is_ok() && got.len() == 2, "{got:?}");
    let e = got[1].as_ref().unwrap_err().to_string();
    assert!(e.contains("t.csv:5") && e.contains("word"), "{e}");

    std::fs::write(&path, "a,label\n").unwrap();
    let got: Vec<_> = read_csv_chunks(&path, &options, 3).unwrap().collect();
    assert_eq!(got.len(), 1);
    assert!(got[0].as_ref().unwrap_err().to_string().contains("a header but no data rows"));
    let e = read_csv_chunks(&tmp.path().join("nope.csv"), &options, 3).unwrap_err().to_string();
    assert!(e.contains("nope.csv"), "{e}");
}

#[test]
fn a_missing_dataset_names_every_place_looked() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = DataDirs::new(vec![tmp.path().join("a"), tmp.path().join("b")]);
    let err = dirs.locate(Known::FashionMnistTrain).unwrap_err();
    let msg = err.to_string();
    for dir in ["a", "b"] {
        for file in ["fashion-mnist/train-images-idx3-ubyte.gz", "train-images-idx3-ubyte"] {
            let p = tmp.path().join(dir).join(file);
            assert!(msg.contains(&p.display().to_string()), "{msg}");
        }
    }
    assert!(msg.contains("TUNEFORGE_DATA"), "{msg}");
}

// ---------------------------------------------------------------- IDX errors

fn idx_bytes(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = magic.to_be_bytes().to_vec();
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn open_pair(images: &Path, labels: &Path, classes: usize, cache: &GzCache) -> Result<IdxDataset> {
    let names = (0..classes).map(|c| c.to_string()).collect();
    // SAFETY: test files are not modified while mapped.
    unsafe { IdxDataset::open(images, labels, names, cache, Access::Mmap) }
}

#[test]
fn idx_errors_name_the_file_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = GzCache::new(tmp.path().join("cache"));
    let images = idx_bytes(IMAGES_MAGIC, &[3, 2, 2], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    let labels = idx_bytes(LABELS_MAGIC, &[3], &[0, 1, 2]);
    let good_i = write(tmp.path(), "good-images", &images);
    let good_l = write(tmp.path(), "good-labels", &labels);
    let ds = open_pair(&good_i, &good_l, 3, &cache).unwrap();
    assert_eq!((ds.len(), ds.feature_shape()), (3, &[2, 2][..]));

    // Wrong magic (labels file given as images).
    let err = open_pair(&good_l, &good_l, 3, &cache).unwrap_err();
    assert!(matches!(err, Error::IdxMagic { found: 0x801, expected: 0x803, .. }), "{err}");
    assert!(err.to_string().contains("good-labels") && err.to_string().contains("offset 0"), "{err}");

    // Truncated at every interesting offset: inside magic, inside dims, inside data.
    for cut in [0usize, 2, 4, 7, 12, 15, 16, 20, images.len() - 1] {
        let p = write(tmp.path(), &format!("cut-{cut}"), &images[..cut]);
        let err = open_pair(&p, &good_l, 3, &cache).unwrap_err();
        let Error::Truncated { path, len, offset, .. } = &err else { panic!("cut {cut}: {err}") };
        assert_eq!((path, *len), (&p, cut as u64), "{err}");
        assert!(*offset <= 16, "{err}");
        assert!(err.to_string().contains(&format!("cut-{cut}")), "{err}");
    }

    // Trailing garbage.
    let mut long = images.clone();
    long.extend_from_slice(&[1, 2, 3]);
    let p = write(tmp.path(), "long", &long);
    let err = open_pair(&p, &good_l, 3, &cache).unwrap_err();
    assert!(matches!(err, Error::TrailingBytes { offset: 28, extra: 3, .. }), "{err}");

    // Label count ≠ image count.
    let p = write(tmp.path(), "two-labels", &idx_bytes(LABELS_MAGIC, &[2], &[0, 1]));
    let err = open_pair(&good_i, &p, 3, &cache).unwrap_err();
    assert!(matches!(err, Error::CountMismatch { image_count: 3, label_count: 2, .. }), "{err}");

    // Label 10 in a 10-class set: row 2, byte offset 8 + 2.
    let p = write(tmp.path(), "label-10", &idx_bytes(LABELS_MAGIC, &[3], &[0, 9, 10]));
    let err = open_pair(&good_i, &p, 10, &cache).unwrap_err();
    assert!(matches!(err, Error::LabelOutOfRange { row: 2, offset: 10, label: 10, classes: 10, .. }), "{err}");

    // Absurd dimensions do not overflow or allocate.
    let p = write(tmp.path(), "huge", &idx_bytes(IMAGES_MAGIC, &[u32::MAX, u32::MAX, u32::MAX], &[]));
    let err = open_pair(&p, &good_l, 3, &cache).unwrap_err();
    assert!(matches!(err, Error::IdxDims { .. } | Error::Truncated { .. }), "{err}");
    let p = write(tmp.path(), "zero-width", &idx_bytes(IMAGES_MAGIC, &[3, 0, 2], &[]));
    assert!(matches!(open_pair(&p, &good_l, 3, &cache).unwrap_err(), Error::IdxDims { .. }));

    // A missing file.
    let err = open_pair(&tmp.path().join("nope"), &good_l, 3, &cache).unwrap_err();
    assert!(matches!(err, Error::Io { .. }) && err.to_string().contains("nope"), "{err}");
}

#[test]
fn corrupt_gzip_is_a_typed_error_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = GzCache::new(tmp.path().join("cache"));
    let labels = idx_bytes(LABELS_MAGIC, &[4000], &vec![3u8; 4000]);
    let compressed = gz(&labels);
    let good = write(tmp.path(), "labels.gz", &compressed);
    assert_eq!(IdxArray::open(&good, LABELS_MAGIC, Some(&cache)).unwrap().dims(), [4000]);

    // Flipped bytes in the deflate stream, a truncated stream, a bad CRC, not gzip at all.
    let mut flipped = compressed.clone();
    let mid = flipped.len() / 2;
    for b in &mut flipped[mid..mid + 4] {
        *b ^= 0xA5;
    }
    let mut bad_crc = compressed.clone();
    let n = bad_crc.len();
    bad_crc[n - 8] ^= 0xFF;
    let cases: [(&str, Vec<u8>); 5] = [
        ("flipped.gz", flipped),
        ("truncated.gz", compressed[..compressed.len() / 2].to_vec()),
        ("crc.gz", bad_crc),
        ("plain.gz", labels.clone()),
        ("empty.gz", Vec::new()),
    ];
    for (name, bytes) in cases {
        let p = write(tmp.path(), name, &bytes);
        let err = IdxArray::open(&p, LABELS_MAGIC, Some(&cache)).unwrap_err();
        assert!(matches!(err, Error::Gzip { .. }), "{name}: {err}");
        assert!(err.to_string().contains(name), "{err}");
        // SAFETY: test files are not modified while mapped.
        let err = unsafe { IdxArray::open_mapped(&p, LABELS_MAGIC, &cache) }.unwrap_err();
        assert!(matches!(err, Error::Gzip { .. }), "{name}: {err}");
    }
    // Failed inflations leave no partial cache file behind.
    let left: Vec<_> = std::fs::read_dir(cache.dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 1, "only the good file's cache: {left:?}");
}

// ---------------------------------------------------------------- CSV errors

fn csv_err(text: &str, opts: &CsvOptions) -> Error {
    read_csv_from(Path::new("bad.csv"), text.as_bytes(), opts).unwrap_err()
}

#[test]
fn csv_errors_name_line_and_column() {
    let opts = CsvOptions::with_label("y");
    let err = csv_err("a,b,y\n1,2,x\n3,4\n", &opts);
    assert!(matches!(err, Error::CsvRagged { line: 3, found: 2, expected: 3, .. }), "{err}");
    assert!(err.to_string().starts_with("bad.csv:3:"), "{err}");

    let err = csv_err("a,b,y\n1,2,x\n3,4,x\n5,abc,y\n", &opts);
    let Error::CsvNumber { line, column, field, value, .. } = &err else { panic!("{err}") };
    assert_eq!((*line, column.as_str(), *field, value.as_str()), (4, "b", 2, "abc"));

    assert!(matches!(csv_err("a,b\n1,2\n", &opts), Error::NoSuchColumn { .. }));
    assert!(matches!(csv_err("a,y\n1,NA\n", &opts), Error::MissingLabel { line: 2, .. }));
    assert!(matches!(csv_err("", &opts), Error::Empty { .. }));
    assert!(matches!(csv_err("a,y\n", &opts), Error::Empty { .. }));
    let drop = CsvOptions { drop: vec!["zz".into()], ..CsvOptions::default() };
    assert!(matches!(csv_err("a,y\n1,2\n", &drop), Error::NoSuchColumn { .. }));
    // Invalid UTF-8 is the CSV reader's error, with the line.
    let bytes = b"a,y\n1,x\n\xff\xfe,y\n";
    let err = read_csv_from(Path::new("bad.csv"), &bytes[..], &opts).unwrap_err();
    assert!(matches!(err, Error::Csv { line: 3, .. }), "{err}");
}

#[test]
fn csv_types_missing_markers_and_categories() {
    let text = "\"\",n,c,y\n\"r1\",NA,red,1\n\"r2\",2.5,?,0\n\"r3\",,blue,1\n\"r4\",NaN,red,10\n";
    let data = read_csv_from(Path::new("t.csv"), text.as_bytes(), &CsvOptions::with_label("y")).unwrap();
    let n = data.table.column("n").unwrap();
    assert_eq!(n.missing, 3);
    let ColumnValues::Numeric(v) = &n.values else { panic!() };
    assert!(v[0].is_nan() && v[1] == 2.5 && v[2].is_nan() && v[3].is_nan());
    let c = data.table.column("c").unwrap();
    assert_eq!(c.missing, 1);
    assert_eq!(
        c.values,
        ColumnValues::Categorical {
            levels: vec!["blue".into(), "red".into()],
            codes: vec![Some(1), None, Some(0), Some(1)]
        }
    );
    // Numeric labels sort numerically: 0 < 1 < 10.
    assert_eq!(data.label_names, ["0", "1", "10"]);
    assert_eq!(data.labels, [1, 0, 1, 2]);
    assert_eq!(data.table.row_names.as_deref(), Some(&["r1".to_string(), "r2".into(), "r3".into(), "r4".into()][..]));
    // Forcing a numeric-looking column to be categorical.
    let opts = CsvOptions { categorical: vec!["n".into()], ..CsvOptions::with_label("y") };
    let data = read_csv_from(Path::new("t.csv"), text.as_bytes(), &opts).unwrap();
    assert!(!data.table.column("n").unwrap().is_numeric());
}

// ---------------------------------------------------------------- batching

/// A synthetic dataset: row r has features [r, r+0.5], label r % classes; optionally
/// fails reading `fail_at` or sleeps per read.
struct Synthetic {
    n: usize,
    names: Vec<String>,
    fail_at: Option<usize>,
    delay: Duration,
}

impl Synthetic {
    fn new(n: usize) -> Self {
        Synthetic { n, names: vec!["a".into(), "b".into(), "c".into()], fail_at: None, delay: Duration::ZERO }
    }
}

impl Dataset for Synthetic {
    fn len(&self) -> usize {
        self.n
    }
    fn feature_shape(&self) -> &[usize] {
        &[2]
    }
    fn label_names(&self) -> &[String] {
        &self.names
    }
    fn label(&self, row: usize) -> u32 {
        (row % 3) as u32
    }
    fn read_rows(&self, start: usize, end: usize, out: &mut [f32]) -> Result<()> {
        std::thread::sleep(self.delay);
        if let Some(f) = self.fail_at.filter(|f| (start..end).contains(f)) {
            return Err(Error::Invalid { what: "synthetic row", why: format!("row {f} is unreadable") });
        }
        for (i, r) in (start..end).enumerate() {
            out[2 * i] = r as f32;
            out[2 * i + 1] = r as f32 + 0.5;
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_batch_size_sequence_visits_each_row_once_per_epoch(
        n in 1usize..300,
        seed in any::<u64>(),
        sizes in prop::collection::vec(1usize..97, 1..40),
    ) {
        let mut sampler = EpochSampler::new(n, seed, true).unwrap();
        let mut seen: Vec<Vec<u32>> = vec![Vec::new()];
        let mut k = 0;
        // Draw until three full epochs are done, cycling through the size sequence.
        while seen.len() <= 3 {
            let d = sampler.next(sizes[k % sizes.len()]).unwrap();
            k += 1;
            prop_assert!(d.rows.len() <= sizes[(k - 1) % sizes.len()]);
            prop_assert_eq!(d.epoch as usize, seen.len() - 1);
            seen.last_mut().unwrap().extend_from_slice(d.rows);
            if d.end_of_epoch {
                seen.push(Vec::new());
            }
        }
        for epoch in &seen[..3] {
            let mut sorted = epoch.clone();
            sorted.sort_unstable();
            prop_assert_eq!(sorted, (0..n as u32).collect::<Vec<_>>());
        }
        // Same seed, same order; a different seed, a different order (n large enough
        // that a collision is practically impossible).
        let again = EpochSampler::new(n, seed, true).unwrap();
        prop_assert_eq!(again.order_of(0), seen[0].clone());
        prop_assert_eq!(again.order_of(1), seen[1].clone());
        if n >= 10 {
            let other = EpochSampler::new(n, seed ^ 1, true).unwrap();
            prop_assert_ne!(other.order_of(0), seen[0].clone());
            prop_assert_ne!(again.order_of(0), again.order_of(1));
        }
    }
}

#[test]
fn loader_scales_caches_and_respects_the_byte_bound() {
    let ds: Arc<dyn Dataset> = Arc::new(Synthetic::new(1000));
    let cfg =
        LoaderConfig { scale: Scale::divide(4.0), shard_rows: 100, cache_bytes: 3 * 100 * 2 * 4, ..Default::default() };
    let mut loader = Loader::new(ds, cfg).unwrap();
    let mut total = 0;
    while total < 1000 {
        let b = loader.next_batch(64).unwrap();
        for i in 0..b.len() {
            let r = b.rows[i] as f32;
            assert_eq!(b.row(i), [r / 4.0, (r + 0.5) / 4.0]);
            assert_eq!(b.labels[i], b.rows[i] % 3);
        }
        total += b.len();
    }
    let s = loader.cache_stats();
    assert_eq!(s.hits + s.misses, 1000);
    assert!(s.bytes <= s.capacity_bytes && s.shards <= 3, "{s:?}");
    assert!(s.evictions > 0 && s.misses >= 10, "{s:?}");

    // A cache that holds everything: the second epoch is all hits.
    let ds: Arc<dyn Dataset> = Arc::new(Synthetic::new(1000));
    let mut loader = Loader::new(ds, LoaderConfig { shard_rows: 100, ..Default::default() }).unwrap();
    for _ in 0..2 {
        loop {
            if loader.next_batch(128).unwrap().end_of_epoch {
                break;
            }
        }
    }
    let s = loader.cache_stats();
    assert_eq!((s.misses, s.hits, s.shards, s.evictions), (10, 1990, 10, 0), "{s:?}");
}

#[test]
fn prefetch_gives_the_same_batches_as_the_plain_loader() {
    let sizes = [7usize, 7, 7, 100, 1, 33, 33, 500, 2, 64, 64, 64, 3, 999, 5];
    let make = || Loader::new(Arc::new(Synthetic::new(777)), LoaderConfig { seed: 42, ..Default::default() }).unwrap();
    let mut plain = make();
    let mut pre = make().prefetch(4).unwrap();
    for round in 0..6 {
        for &s in &sizes {
            let a = plain.next_batch(s).unwrap();
            let b = pre.next_batch(s).unwrap();
            assert_eq!(a, b, "round {round}, size {s}");
        }
    }
}

#[test]
fn prefetch_worker_errors_reach_the_consumer() {
    let mut ds = Synthetic::new(500);
    ds.fail_at = Some(321);
    let cfg = LoaderConfig { shuffle: false, cache_bytes: 0, ..Default::default() };
    let mut pre = Loader::new(Arc::new(ds), cfg).unwrap().prefetch(2).unwrap();
    let mut ok_rows = 0;
    let err = loop {
        match pre.next_batch(50) {
            Ok(b) => ok_rows += b.len(),
            Err(e) => break e,
        }
    };
    assert_eq!(ok_rows, 300);
    assert!(err.to_string().contains("row 321 is unreadable"), "{err}");
    assert!(matches!(pre.next_batch(50), Err(Error::Worker(_))));
}

#[test]
fn dropping_the_prefetcher_stops_the_worker_promptly() {
    let mut ds = Synthetic::new(100_000);
    ds.delay = Duration::from_millis(20);
    let cfg = LoaderConfig { cache_bytes: 0, ..Default::default() };
    let mut pre = Loader::new(Arc::new(ds), cfg).unwrap().prefetch(1000).unwrap();
    pre.next_batch(1).unwrap();
    // The worker would need 1000 × 20 ms = 20 s to fill its queue.
    let t = Instant::now();
    drop(pre);
    assert!(t.elapsed() < Duration::from_secs(2), "drop took {:?}", t.elapsed());
}

#[test]
fn fashion_mnist_epoch_with_changing_batch_sizes_covers_every_image_once() {
    let train = fmnist(Known::FashionMnistTrain);
    let cfg = LoaderConfig { seed: 7, scale: Scale::divide(255.0), ..Default::default() };
    let mut pre = Loader::new(train.clone(), cfg).unwrap().prefetch(4).unwrap();
    let mut seen = vec![0u8; 60_000];
    let mut raw = vec![0f32; 784];
    let sizes = [128usize, 32, 512, 256, 64];
    let mut k = 0;
    loop {
        let b = pre.next_batch(sizes[k % sizes.len()]).unwrap();
        k += 1;
        for (i, &r) in b.rows.iter().enumerate() {
            seen[r as usize] += 1;
            if r % 997 == 0 {
                train.read_row(r as usize, &mut raw).unwrap();
                let expect: Vec<f32> = raw.iter().map(|v| v * (1.0 / 255.0)).collect();
                assert_eq!(b.row(i), &expect[..]);
                assert_eq!(b.labels[i], train.label(r as usize));
            }
        }
        if b.end_of_epoch {
            break;
        }
    }
    assert!(seen.iter().all(|&c| c == 1));
    // The background thread keeps 4 batches ready, so by now it may have read up to 4
    // batches of the next epoch (CI once saw 60,512: one batch of 512 ahead).
    let s = pre.cache_stats();
    let reads = s.hits + s.misses;
    assert!((60_000..=60_000 + 4 * 512).contains(&reads), "{reads} rows read through the cache");
}

#[test]
fn stratified_split_keeps_class_proportions_and_is_seeded() {
    let digits = DataDirs::new(vec![repo_datasets()]).open(Known::Digits, &shared_cache()).unwrap();
    let labels: Vec<u32> = (0..digits.len()).map(|r| digits.label(r)).collect();
    let (train, test) = stratified_split(&labels, 0.2, 42).unwrap();
    assert_eq!(train.len() + test.len(), 1797);
    // Per class: round(count × 0.2) in the test part.
    let counts = digits.class_counts();
    for (c, &n) in counts.iter().enumerate() {
        let in_test = test.iter().filter(|&&r| labels[r as usize] == c as u32).count();
        assert_eq!(in_test, (n as f64 * 0.2).round() as usize, "class {c}");
    }
    let mut all: Vec<u32> = train.iter().chain(&test).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..1797).collect::<Vec<u32>>());
    assert_eq!(stratified_split(&labels, 0.2, 42).unwrap().1, test);
    assert_ne!(stratified_split(&labels, 0.2, 43).unwrap().1, test);
    assert!(stratified_split(&labels, 1.0, 0).is_err());

    // A subset view and an in-memory copy read the same rows.
    let sub = Subset::new(digits.clone(), test.clone()).unwrap();
    let mem = InMemory::copy_of(&sub).unwrap();
    let (mut a, mut b) = (vec![0f32; 64], vec![0f32; 64]);
    sub.read_row(5, &mut a).unwrap();
    digits.read_row(test[5] as usize, &mut b).unwrap();
    assert_eq!(a, b);
    mem.read_row(5, &mut b).unwrap();
    assert_eq!(a, b);
    assert_eq!(mem.label(5), digits.label(test[5] as usize));
    assert!(Subset::new(digits.clone(), vec![5000]).is_err());
    assert!(InMemory::new(vec![0.0; 3], vec![0, 1], vec![2], vec!["a".into(), "b".into()]).is_err());
    assert!(InMemory::new(vec![0.0; 4], vec![0, 2], vec![2], vec!["a".into(), "b".into()]).is_err());
}

/// A batch large enough for the parallel gather (200 Fashion-MNIST rows, 156,800 values,
/// rows repeated and out of order), with and without the shard cache, equals the rows read
/// one by one and scaled; so does a small batch, gathered on one thread.
#[test]
fn large_batches_gathered_in_parallel_equal_rows_read_one_by_one() {
    let ds = fmnist(Known::FashionMnistTest);
    let scale = Scale::divide(255.0);
    let f = ds.feature_len();
    for cache_bytes in [0, 64 << 20] {
        let cfg = LoaderConfig { scale, cache_bytes, shard_rows: 64, ..Default::default() };
        let loader = Loader::new(ds.clone(), cfg).unwrap();
        for n in [200u32, 20] {
            let rows: Vec<u32> = (0..n).map(|i| (i * 7_919 + 13) % 10_000).chain([5, 5]).collect();
            let mut batch = Batch::default();
            loader.gather(&rows, &mut batch).unwrap();
            assert_eq!(batch.features.len(), rows.len() * f);
            let mut want = vec![0f32; f];
            for (i, &r) in rows.iter().enumerate() {
                ds.read_row(r as usize, &mut want).unwrap();
                scale.apply(&mut want);
                assert_eq!(&batch.features[i * f..][..f], &want[..], "row {r}, cache {cache_bytes}, batch {n}");
                assert_eq!(batch.labels[i], ds.label(r as usize));
            }
        }
    }
}

/// digits and biopsy are built in: found with no data directory holding them, written once
/// into the given folder, byte for byte the committed files, and read as they are.
#[test]
fn builtin_datasets_need_no_data_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let builtin = tmp.path().join("cache/builtin");
    let dirs = DataDirs::new(vec![tmp.path().join("empty")]).builtin_in(&builtin);
    let repo = DataDirs::new(vec![repo_datasets()]).builtin_in(tmp.path().join("unused"));
    let cache = shared_cache();
    for (known, file) in [(Known::Digits, "digits.csv"), (Known::Biopsy, "biopsy.csv")] {
        let path = dirs.locate(known).unwrap().remove(0);
        assert!(path.starts_with(&builtin) && dirs.is_builtin(&path), "{}", path.display());
        assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(repo_datasets().join(file)).unwrap());
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert_eq!(dirs.locate(known).unwrap(), std::slice::from_ref(&path));
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), modified, "written once");
        let (a, b) = (dirs.open(known, &cache).unwrap(), repo.open(known, &cache).unwrap());
        assert_eq!((a.len(), a.feature_shape(), a.class_counts()), (b.len(), b.feature_shape(), b.class_counts()));
        let mut rows = (vec![0f32; a.len() * a.feature_len()], vec![0f32; b.len() * b.feature_len()]);
        a.read_rows(0, a.len(), &mut rows.0).unwrap();
        b.read_rows(0, b.len(), &mut rows.1).unwrap();
        assert!(rows.0.iter().zip(&rows.1).all(|(x, y)| x.to_bits() == y.to_bits()));
        // A data directory that has it comes first.
        let found = repo.locate(known).unwrap().remove(0);
        assert!(found.starts_with(repo_datasets()) && !repo.is_builtin(&found), "{}", found.display());
    }
    // Only the two files, no temporary ones.
    assert_eq!(std::fs::read_dir(&builtin).unwrap().count(), 2);
    // Fashion-MNIST is not built in.
    assert!(matches!(dirs.locate(Known::FashionMnistTest), Err(Error::NotFound { .. })));
}
