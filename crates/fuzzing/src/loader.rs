//! Targets of the loader: IDX files (raw and `.gz`) and CSV tables.

use std::io::{Read, Write};
use std::path::Path;

use tuneforge_loader::idx::{IMAGES_MAGIC, LABELS_MAGIC, parse_header};
use tuneforge_loader::{ColumnValues, CsvData, CsvDataset, CsvOptions, Dataset, IdxArray, IdxDataset, IdxReader};

use crate::{Verdict, same, scratch};

/// IDX bytes as a raw file: the header parsed with the image magic, the label magic and
/// the file's own magic (any rank); an accepted header must re-encode to the file's first
/// bytes and announce exactly the file's length. Bytes accepted as images are then opened
/// as a dataset with a matching label file, and every row read back must be the bytes; and
/// read from a file by `IdxReader` (same verdict and error, same rows).
pub fn idx(data: &[u8]) -> Verdict {
    let path = Path::new("fuzz.idx");
    let own = data.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let mut verdict = Verdict::Rejected;
    for magic in [IMAGES_MAGIC, LABELS_MAGIC].into_iter().chain(own) {
        if let Ok((dims, offset)) = parse_header(path, data, magic) {
            check_header(data, magic, &dims, offset);
            verdict = Verdict::Accepted;
        }
    }
    if let Ok((dims, offset)) = parse_header(path, data, IMAGES_MAGIC) {
        check_dataset(data, &dims, offset);
    }
    check_reader(data);
    verdict
}

/// The same bytes as a file read by `IdxReader` with the image magic: refused iff
/// `parse_header` refuses them, with the same message; accepted, a chunk of 1–4 rows at a
/// time (the last byte says how many) gives the file's bytes after the header.
fn check_reader(data: &[u8]) {
    let file = scratch::write("reader.idx", data);
    let cache = tuneforge_loader::GzCache::new(file.with_file_name("cache"));
    let parsed = parse_header(&file, data, IMAGES_MAGIC);
    let (mut reader, offset) = match (IdxReader::open(&file, IMAGES_MAGIC, &cache), parsed) {
        (Ok(reader), Ok((dims, offset))) => {
            same("IdxReader dims = parse_header's", &reader.dims(), &dims.as_slice());
            same("IdxReader rows", &reader.len(), &dims[0]);
            (reader, offset)
        }
        (Err(e), Err(want)) => return same("IdxReader's error = parse_header's", &e.to_string(), &want.to_string()),
        (got, want) => panic!("invariant broken: IdxReader::open {got:?} where parse_header gives {want:?}"),
    };
    let step = data.last().map_or(1, |b| usize::from(b % 4) + 1);
    let (mut joined, mut chunk) = (Vec::new(), Vec::new());
    for start in (0..reader.len()).step_by(step) {
        reader
            .read_rows(start, start + step, &mut chunk)
            .unwrap_or_else(|e| panic!("invariant broken: read_rows: {e}"));
        joined.extend_from_slice(&chunk);
    }
    same("IdxReader rows = file bytes after the header", &joined.as_slice(), &&data[offset..]);
}

/// IDX bytes as a `.gz` file, opened as the loader opens it (inflated in memory). An
/// accepted file's data must be the input inflated (after the header), and the inflated
/// bytes compressed again must open to the same array.
pub fn idx_gz(data: &[u8]) -> Verdict {
    let path = scratch::write("fuzz.idx.gz", data);
    let (magic, array) = match IdxArray::open(&path, IMAGES_MAGIC, None) {
        Err(tuneforge_loader::Error::IdxMagic { found, .. }) => (found, IdxArray::open(&path, found, None)),
        other => (IMAGES_MAGIC, other),
    };
    let Ok(array) = array else { return Verdict::Rejected };

    let mut inflated = Vec::new();
    let decoded = flate2::read::GzDecoder::new(data).read_to_end(&mut inflated);
    assert!(decoded.is_ok(), "invariant broken: the loader inflated a file flate2 refuses: {decoded:?}");
    check_header(&inflated, magic, array.dims(), array.data_offset());
    same("data = inflated bytes after the header", &array.data(), &&inflated[array.data_offset()..]);

    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(&inflated).expect("compressing into memory");
    let again = scratch::write("fuzz-again.idx.gz", &encoder.finish().expect("compressing into memory"));
    match IdxArray::open(&again, magic, None) {
        Ok(a) => {
            same("dims after recompression", &a.dims(), &array.dims());
            same("data after recompression", &a.data(), &array.data());
        }
        Err(e) => panic!("invariant broken: recompressed IDX file refused: {e}"),
    }
    Verdict::Accepted
}

/// An accepted header: its rank is the magic's, it re-encodes to the file's first bytes,
/// rows have a size, and dims × 1 byte + header = the file's length.
pub(crate) fn check_header(file: &[u8], magic: u32, dims: &[usize], offset: usize) {
    same("rank = magic & 0xff", &dims.len(), &((magic & 0xff) as usize));
    same("data offset = 4 + 4 × rank", &offset, &(4 + 4 * dims.len()));
    let mut header = magic.to_be_bytes().to_vec();
    for &d in dims {
        let d = u32::try_from(d).unwrap_or_else(|_| panic!("invariant broken: dimension {d} is not a u32"));
        header.extend_from_slice(&d.to_be_bytes());
    }
    same("header re-encodes to the file's first bytes", &Some(header.as_slice()), &file.get(..offset));
    assert!(dims.iter().skip(1).all(|&d| d > 0), "invariant broken: a row dimension is 0 in {dims:?}");
    let size = dims.iter().try_fold(1u128, |acc, &d| acc.checked_mul(d as u128));
    same("dims product + header = file length", &size.map(|s| s + offset as u128), &Some(file.len() as u128));
}

/// Opens `images` (accepted with the image magic) with a label file of as many rows, as
/// `IdxDataset` does for MNIST, and reads every row back.
fn check_dataset(images: &[u8], dims: &[usize], offset: usize) {
    let rows = dims[0];
    let mut labels = LABELS_MAGIC.to_be_bytes().to_vec();
    labels.extend_from_slice(&u32::try_from(rows).expect("checked by check_header").to_be_bytes());
    labels.extend((0..rows).map(|r| (r % 10) as u8));
    let images_path = scratch::write("images.idx", images);
    let labels_path = scratch::write("labels.idx", &labels);
    let open = |path: &Path, magic| {
        IdxArray::open(path, magic, None)
            .unwrap_or_else(|e| panic!("invariant broken: a header parse_header accepted is refused by open: {e}"))
    };
    let names = (0..10).map(|k| k.to_string()).collect();
    let dataset = IdxDataset::from_arrays(open(&images_path, IMAGES_MAGIC), open(&labels_path, LABELS_MAGIC), names)
        .unwrap_or_else(|e| panic!("invariant broken: a consistent image/label pair is refused: {e}"));
    same("dataset rows", &dataset.len(), &rows);
    same("feature shape", &dataset.feature_shape(), &&dims[1..]);
    same("class counts add up to the rows", &dataset.class_counts().iter().sum::<usize>(), &rows);
    if rows == 0 {
        return;
    }
    let f = dataset.feature_len();
    let pixels = &images[offset..];
    let mut start = 0;
    while start < rows {
        let end = (start + 7).min(rows);
        let mut out = vec![0f32; (end - start) * f];
        dataset.read_rows(start, end, &mut out).unwrap_or_else(|e| panic!("invariant broken: read_rows failed: {e}"));
        let want: Vec<f32> = pixels[start * f..end * f].iter().map(|&b| f32::from(b)).collect();
        same("rows read = file bytes", &out, &want);
        start = end;
    }
}

/// CSV text read without and with a label column (the last column), as
/// `tuneforge_loader::read_csv` reads files. Accepted tables must be consistent (column
/// lengths, missing counts, codes and labels in range, the dataset's rows = the table's
/// values), and a canonical rewrite of the table must read back to the same rewrite. Read a
/// chunk of 1–8 rows at a time (the first byte says how many), the text must give the same
/// cells, or the same error.
pub fn csv(data: &[u8]) -> Verdict {
    let path = Path::new("fuzz.csv");
    let rows = data.first().map_or(1, |b| usize::from(b % 8) + 1);
    let plain = tuneforge_loader::read_csv_from(path, data, &CsvOptions::default());
    check_chunks(data, &CsvOptions::default(), &plain, rows);
    let Ok(plain) = plain else {
        return Verdict::Rejected;
    };
    check_csv(&plain, &CsvOptions::default());
    if let Some(label) = plain.table.columns.last().map(|c| c.name.clone()) {
        let options = CsvOptions::with_label(&label);
        let labelled = tuneforge_loader::read_csv_from(path, data, &options);
        check_chunks(data, &options, &labelled, rows);
        if let Ok(labelled) = labelled {
            check_csv(&labelled, &CsvOptions::with_label(CANONICAL_LABEL));
        }
    }
    Verdict::Accepted
}

/// `data` read `rows` rows at a time gives what one read gave (`whole`): the same error, or
/// the same cells in chunks of `rows` rows (the last one shorter).
fn check_chunks(data: &[u8], options: &CsvOptions, whole: &tuneforge_loader::Result<CsvData>, rows: usize) {
    let path = Path::new("fuzz.csv");
    let chunks: Vec<_> = match tuneforge_loader::read_csv_chunks_from(path, data, options, rows) {
        Ok(chunks) => chunks.collect(),
        Err(e) => vec![Err(e)],
    };
    let error = chunks.iter().find_map(|c| c.as_ref().err().map(ToString::to_string));
    same("the error read in chunks = the error read at once", &error, &whole.as_ref().err().map(ToString::to_string));
    let Ok(whole) = whole else { return };
    let sizes: Vec<usize> = chunks.iter().flatten().map(|c| c.table.n_rows).collect();
    let mut want = vec![rows; whole.table.n_rows / rows];
    if whole.table.n_rows % rows > 0 {
        want.push(whole.table.n_rows % rows);
    }
    same("chunk sizes", &sizes, &want);
    let joined: Vec<Vec<Option<String>>> = chunks.iter().flatten().flat_map(cells).collect();
    same("cells read in chunks = cells read at once", &joined, &cells(whole));
}

/// Each row's cells as text: features (a missing one `None`, whatever its column's kind),
/// then the label's name and the row's name when there are.
fn cells(data: &CsvData) -> Vec<Vec<Option<String>>> {
    let t = &data.table;
    (0..t.n_rows)
        .map(|r| {
            let mut row: Vec<Option<String>> = t
                .columns
                .iter()
                .map(|c| match &c.values {
                    ColumnValues::Numeric(v) => (!v[r].is_nan()).then(|| format!("{:?}", v[r])),
                    ColumnValues::Categorical { levels, codes } => codes[r].map(|k| levels[k as usize].clone()),
                })
                .collect();
            if data.label_column.is_some() {
                row.push(Some(data.label_names[data.labels[r] as usize].clone()));
            }
            if let Some(names) = &t.row_names {
                row.push(Some(names[r].clone()));
            }
            row
        })
        .collect()
}

/// The label column's name in a canonical rewrite.
const CANONICAL_LABEL: &str = "label";

fn check_csv(data: &CsvData, reread: &CsvOptions) {
    let table = &data.table;
    for c in &table.columns {
        same("column length = rows", &c.len(), &table.n_rows);
        let missing = match &c.values {
            ColumnValues::Numeric(v) => v.iter().filter(|x| x.is_nan()).count(),
            ColumnValues::Categorical { levels, codes } => {
                assert!(
                    codes.iter().flatten().all(|&k| (k as usize) < levels.len()),
                    "invariant broken: a code of {:?} is out of range",
                    c.name
                );
                codes.iter().filter(|k| k.is_none()).count()
            }
        };
        same("missing count = missing values", &c.missing, &missing);
    }
    if let Some(names) = &table.row_names {
        same("row names = rows", &names.len(), &table.n_rows);
    }
    if data.label_column.is_some() {
        same("labels = rows", &data.labels.len(), &table.n_rows);
        assert!(
            data.labels.iter().all(|&l| (l as usize) < data.label_names.len()),
            "invariant broken: a label is out of range"
        );
        let dataset = CsvDataset::new(data.clone()).unwrap_or_else(|e| panic!("invariant broken: {e}"));
        let width = table.columns.len();
        let mut out = vec![0f32; table.n_rows * width];
        dataset.read_rows(0, table.n_rows, &mut out).unwrap_or_else(|e| panic!("invariant broken: {e}"));
        for (j, c) in table.columns.iter().enumerate() {
            for r in 0..table.n_rows {
                let want = match &c.values {
                    ColumnValues::Numeric(v) => v[r] as f32,
                    ColumnValues::Categorical { codes, .. } => codes[r].map_or(f32::NAN, |k| k as f32),
                };
                let got = out[r * width + j];
                assert!(
                    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                    "invariant broken: dataset row {r} column {j} is {got}, the table says {want}"
                );
            }
        }
    }

    let first = canonical(data);
    let again = tuneforge_loader::read_csv_from(Path::new("canonical.csv"), first.as_slice(), reread)
        .unwrap_or_else(|e| panic!("invariant broken: the canonical rewrite is refused: {e}\n{}", show(&first)));
    same("canonical rewrite reads back to itself", &show(&canonical(&again)), &show(&first));
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The table written back as CSV: row names first (under an empty header), then the label
/// (as [`CANONICAL_LABEL`]), then the features; numbers in Rust's shortest round-trip form,
/// missing values as `NA`.
fn canonical(data: &CsvData) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let table = &data.table;
    let labelled = data.label_column.is_some();
    let mut header: Vec<&str> = Vec::new();
    if table.row_names.is_some() {
        header.push("");
    }
    if labelled {
        header.push(CANONICAL_LABEL);
    }
    header.extend(table.columns.iter().map(|c| c.name.as_str()));
    w.write_record(&header).expect("writing CSV into memory");
    for r in 0..table.n_rows {
        let mut record: Vec<String> = Vec::new();
        if let Some(names) = &table.row_names {
            record.push(names[r].clone());
        }
        if labelled {
            record.push(data.label_names[data.labels[r] as usize].clone());
        }
        for c in &table.columns {
            record.push(match &c.values {
                ColumnValues::Numeric(v) if v[r].is_nan() => "NA".into(),
                ColumnValues::Numeric(v) => v[r].to_string(),
                ColumnValues::Categorical { levels, codes } => {
                    codes[r].map_or_else(|| "NA".into(), |k| levels[k as usize].clone())
                }
            });
        }
        w.write_record(&record).expect("writing CSV into memory");
    }
    w.into_inner().expect("writing CSV into memory")
}

/// Labelled or unlabelled texts (`tuneforge_loader::read_text_from`), as JSON lines and as
/// CSV (fields `text` and `label`). Read
/// with labels required and with [`Labels::IfPresent`](tuneforge_loader::Labels) (what
/// `predict` uses): whatever the first accepts, the second must read the same, labelled.
/// An accepted read has one label in range per text (none when unlabelled), sorted distinct
/// label names, and written again as JSON lines reads back to the same texts and labels.
pub fn text(data: &[u8]) -> Verdict {
    use tuneforge_loader::{Labels, TextFormat, TextOptions, read_text_from};
    let mut verdict = Verdict::Rejected;
    for format in [TextFormat::Jsonl, TextFormat::Csv] {
        let read = |labels| {
            let options = TextOptions { format, labels, ..TextOptions::default() };
            read_text_from(Path::new("fuzz.txt"), data, &options)
        };
        let required = read(Labels::Required);
        let optional = read(Labels::IfPresent);
        if let Ok(required) = &required {
            let Ok(optional) = &optional else {
                panic!("invariant broken: labelled data refused when labels are optional: {optional:?}");
            };
            same("required → labelled", &required.labelled, &true);
            same(
                "optional reads labelled data the same",
                &(&optional.texts, &optional.labels),
                &(&required.texts, &required.labels),
            );
        }
        let Ok(read) = optional else { continue };
        verdict = Verdict::Accepted;
        if read.labelled {
            same("one label per text", &read.labels.len(), &read.texts.len());
            assert!(
                read.labels.iter().all(|&l| (l as usize) < read.label_names.len()),
                "invariant broken: label out of range"
            );
            let mut names = read.label_names.clone();
            names.dedup();
            same("label names distinct", &names.len(), &read.label_names.len());
        } else {
            assert!(
                read.labels.is_empty() && read.label_names.is_empty(),
                "invariant broken: labels of unlabelled data"
            );
        }
        let lines: Vec<String> = read
            .texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                match read.labelled {
                    true => serde_json::json!({"text": t, "label": read.label_names[read.labels[i] as usize]}),
                    false => serde_json::json!({"text": t}),
                }
                .to_string()
            })
            .collect();
        let again = read_text_from(
            Path::new("again.jsonl"),
            lines.join("\n").as_bytes(),
            &TextOptions { labels: Labels::IfPresent, ..TextOptions::default() },
        )
        .unwrap_or_else(|e| panic!("invariant broken: texts written again as JSON lines do not read: {e}"));
        same(
            "JSON lines round trip",
            &(&again.texts, &again.labels, again.labelled),
            &(&read.texts, &read.labels, read.labelled),
        );
        chunks_equal_one_read(data, format, &read);
    }
    verdict
}

/// What `predict` reads: the same texts in chunks of a few rows and of at most a few bytes
/// (sizes taken from the input) give, concatenated, the texts and labels of one read; each
/// chunk ends at its row count, or at the byte cap reached with its last text, or at the end.
fn chunks_equal_one_read(data: &[u8], format: tuneforge_loader::TextFormat, read: &tuneforge_loader::TextData) {
    use tuneforge_loader::{Labels, TextOptions, read_text_chunks_from};
    let rows = 1 + data.len() % 4;
    let cap = 1 + data.first().map_or(0, |&b| b as usize % 48);
    let options = TextOptions { format, labels: Labels::IfPresent, ..TextOptions::default() };
    let chunks: Vec<_> = read_text_chunks_from(Path::new("fuzz.txt"), data, &options, rows)
        .unwrap_or_else(|e| panic!("invariant broken: chunks refused what one read accepts: {e}"))
        .max_bytes(cap)
        .map(|c| c.unwrap_or_else(|e| panic!("invariant broken: a chunk refused what one read accepts: {e}")))
        .collect();
    let named = |d: &tuneforge_loader::TextData| -> Vec<String> {
        d.labels.iter().map(|&l| d.label_names[l as usize].clone()).collect()
    };
    let texts: Vec<&String> = chunks.iter().flat_map(|c| &c.texts).collect();
    same("chunked texts", &texts, &read.texts.iter().collect::<Vec<_>>());
    let labels: Vec<String> = chunks.iter().flat_map(named).collect();
    same("chunked labels", &labels, &named(read));
    for (i, c) in chunks.iter().enumerate() {
        let n = c.texts.len();
        assert!((1..=rows).contains(&n), "invariant broken: chunk {i} has {n} texts (rows {rows})");
        let before_last: usize = c.texts[..n - 1].iter().map(String::len).sum();
        assert!(before_last < cap, "invariant broken: chunk {i} went on past the byte cap {cap}");
        let all = before_last + c.texts[n - 1].len();
        if i + 1 < chunks.len() {
            assert!(n == rows || all >= cap, "invariant broken: chunk {i} ended early ({n} texts, {all} bytes)");
        }
    }
}
