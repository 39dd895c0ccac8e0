//! Text datasets (`read_text`): crafted JSON lines (plain and gzip) and CSV, every error
//! path with its line and field, and the real SpamAssassin corpus.

use std::path::Path;

use proptest::prelude::*;
use tuneforge_loader::*;

use super::{gz, shared_data, write};

fn jsonl() -> TextOptions {
    TextOptions::default()
}

fn csv() -> TextOptions {
    TextOptions { format: TextFormat::Csv, ..TextOptions::default() }
}

fn read_str(text: &str, options: &TextOptions) -> Result<TextData> {
    read_text_from(Path::new("inline.jsonl"), text.as_bytes(), options)
}

fn err(text: &[u8], options: &TextOptions) -> Error {
    read_text_from(Path::new("bad.jsonl"), text, options).unwrap_err()
}

/// Three documents, a blank line, escapes and non-ASCII text; labels "spam"/"ham" out of
/// sorted order so that the indices must come from sorting, not from first appearance.
const ROWS: &str = concat!(
    r#"{"id": 1, "label": "spam", "text": "Buy now!\nCheap \"pills\""}"#,
    "\n\n",
    r#"{"text": "Café meeting at 10", "label": "ham", "extra": [1, 2]}"#,
    "\r\n",
    r#"{"label":"spam","text":""}"#,
    "\n",
);

fn check_rows(data: &TextData) {
    assert_eq!(data.texts, ["Buy now!\nCheap \"pills\"", "Café meeting at 10", ""]);
    assert_eq!(data.label_names, ["ham", "spam"]);
    assert_eq!(data.labels, [1, 0, 1]);
    assert_eq!(data.class_counts(), [1, 2]);
}

#[test]
fn jsonl_plain_and_gzip_read_the_same_rows() {
    check_rows(&read_str(ROWS, &jsonl()).unwrap());
    check_rows(&read_str(&format!("\u{feff}{ROWS}"), &jsonl()).unwrap());
    // gzip recognised by its magic bytes, whatever the name says.
    let tmp = tempfile::tempdir().unwrap();
    let zipped = write(tmp.path(), "rows.txt", &gz(ROWS.as_bytes()));
    let data = read_text(&zipped, &jsonl()).unwrap();
    check_rows(&data);
    assert_eq!(data.path, zipped);
    let plain = write(tmp.path(), "rows.jsonl.gz", ROWS.as_bytes());
    check_rows(&read_text(&plain, &jsonl()).unwrap());
    // Two concatenated gzip members are one stream.
    let (a, b) = ROWS.split_at(ROWS.find("\n\n").unwrap());
    let mut two = gz(a.as_bytes());
    two.extend(gz(b.as_bytes()));
    check_rows(&read_text_from(Path::new("two.gz"), two.as_slice(), &jsonl()).unwrap());
}

#[test]
fn jsonl_labels_may_be_integers_or_booleans_and_fields_are_named() {
    let opts = TextOptions { text_field: "body".into(), label_field: "y".into(), ..jsonl() };
    let data =
        read_str("{\"body\":\"a\",\"y\":10}\n{\"body\":\"b\",\"y\":2}\n{\"body\":\"c\",\"y\":10}\n", &opts).unwrap();
    // Numbers sort numerically (2 before 10), as read_csv's labels do.
    assert_eq!(data.label_names, ["2", "10"]);
    assert_eq!(data.labels, [1, 0, 1]);
    let data = read_str("{\"body\":\"a\",\"y\":true}\n{\"body\":\"b\",\"y\":false}\n", &opts).unwrap();
    assert_eq!(data.label_names, ["false", "true"]);
    assert_eq!(data.labels, [1, 0]);
    // One class only is allowed.
    let data = read_str("{\"body\":\"a\",\"y\":\"x\"}\n", &opts).unwrap();
    assert_eq!((data.label_names.len(), data.labels.as_slice()), (1, &[0u32][..]));
}

#[test]
fn csv_reads_quoted_multiline_text_by_column_name() {
    let text = "id,text,label\n1,\"Hello, world\",ham\n2,\"two\nlines \"\"quoted\"\"\",spam\n\n3,plain,ham\n";
    let data = read_text_from(Path::new("inline.csv"), text.as_bytes(), &csv()).unwrap();
    assert_eq!(data.texts, ["Hello, world", "two\nlines \"quoted\"", "plain"]);
    assert_eq!(data.label_names, ["ham", "spam"]);
    assert_eq!(data.labels, [0, 1, 0]);
    let tmp = tempfile::tempdir().unwrap();
    let p = write(tmp.path(), "t.csv.gz", &gz(text.as_bytes()));
    assert_eq!(TextFormat::from_path(&p), TextFormat::Csv);
    assert_eq!(read_text(&p, &csv()).unwrap().texts, data.texts);
}

#[test]
fn format_follows_the_extension() {
    for (name, format) in [
        ("a.csv", TextFormat::Csv),
        ("a.CSV.GZ", TextFormat::Csv),
        ("dir.csv/a.jsonl", TextFormat::Jsonl),
        ("a.jsonl.gz", TextFormat::Jsonl),
        ("a", TextFormat::Jsonl),
    ] {
        assert_eq!(TextFormat::from_path(Path::new(name)), format, "{name}");
    }
}

#[test]
fn jsonl_errors_name_line_and_field() {
    let good = r#"{"text":"ok","label":"a"}"#;
    // The bad row is on line 4: line 2 is blank, and blank lines still count.
    let at4 = |bad: &str| format!("{good}\n\n{good}\n{bad}\n{good}\n");
    let e = err(at4("{\"text\": \"unterminated}").as_bytes(), &jsonl());
    assert!(matches!(&e, Error::JsonRow { line: 4, .. }), "{e}");
    assert!(e.to_string().starts_with("bad.jsonl:4:"), "{e}");
    let e = err(at4("[\"text\", \"label\"]").as_bytes(), &jsonl());
    assert!(matches!(&e, Error::JsonRow { line: 4, why, .. } if why.contains("array")), "{e}");

    let field_err = |bad: &str, want: &str| {
        let e = err(at4(bad).as_bytes(), &jsonl());
        match &e {
            Error::TextField { line: 4, field, .. } if field == want => e,
            _ => panic!("{bad}: expected a TextField error for {want:?} on line 4, got {e}"),
        }
    };
    assert!(field_err(r#"{"label":"a"}"#, "text").to_string().contains("missing"));
    assert!(field_err(r#"{"text":3,"label":"a"}"#, "text").to_string().contains("number 3"));
    assert!(field_err(r#"{"text":null,"label":"a"}"#, "text").to_string().contains("null"));
    assert!(field_err(r#"{"text":"x"}"#, "label").to_string().contains("missing"));
    assert!(field_err(r#"{"text":"x","label":1.5}"#, "label").to_string().contains("1.5"));
    assert!(field_err(r#"{"text":"x","label":["a"]}"#, "label").to_string().contains("array"));
    field_err(r#"{"text":"x","label":"  "}"#, "label");

    // Invalid UTF-8 on line 2, byte 12 of the line.
    let mut bytes = format!("{good}\n").into_bytes();
    bytes.extend_from_slice(b"{\"text\":\"ab\xff\",\"label\":\"a\"}\n");
    let e = err(&bytes, &jsonl());
    assert!(matches!(&e, Error::Utf8 { line: 2, byte: 12, field: None, .. }), "{e}");
}

#[test]
fn empty_input_is_an_error() {
    for text in ["", "\n\n  \n"] {
        let e = err(text.as_bytes(), &jsonl());
        assert!(matches!(e, Error::Empty { .. }), "{text:?}: {e}");
    }
    let e = err(b"text,label\n", &csv());
    assert!(matches!(e, Error::Empty { .. }), "{e}");
    let e = err(&gz(b""), &jsonl());
    assert!(matches!(e, Error::Empty { .. }), "{e}");
}

#[test]
fn csv_errors_name_line_and_column() {
    let e = err(b"id,body,label\n1,x,a\n", &csv());
    match &e {
        Error::NoSuchColumn { column, available, .. } => {
            assert_eq!(column, "text");
            assert_eq!(available, &["id", "body", "label"]);
        }
        _ => panic!("expected NoSuchColumn, got {e}"),
    }
    let e = err(b"text,label\nx,a\ny,b\nz\n", &csv());
    assert!(matches!(e, Error::CsvRagged { line: 4, found: 1, expected: 2, .. }), "{e}");
    let e = err(b"text,label\nx,a\ny,\n", &csv());
    assert!(matches!(&e, Error::TextField { line: 3, field, .. } if field == "label"), "{e}");
    let e = err(b"text,label\nx,a\n\"y\xfe\",b\n", &csv());
    assert!(matches!(&e, Error::Utf8 { line: 3, byte: 2, field: Some(f), .. } if f == "text"), "{e}");
}

#[test]
fn corrupt_gzip_text_is_a_gzip_error() {
    let jsonl_rows = (0..2000).map(|i| format!("{{\"text\":\"row {i}\",\"label\":\"a\"}}\n")).collect::<String>();
    let csv_rows = "text,label\n".to_string() + &(0..2000).map(|i| format!("row {i},a\n")).collect::<String>();
    for (rows, options) in [(jsonl_rows, jsonl()), (csv_rows, csv())] {
        let compressed = gz(rows.as_bytes());
        assert_eq!(read_text_from(Path::new("ok.gz"), compressed.as_slice(), &options).unwrap().len(), 2000);
        let truncated = &compressed[..compressed.len() / 2];
        let mut flipped = compressed.clone();
        let mid = flipped.len() / 2;
        for b in &mut flipped[mid..mid + 8] {
            *b ^= 0xA5;
        }
        for (name, bytes) in [("truncated", truncated), ("flipped", flipped.as_slice())] {
            let e = read_text_from(Path::new(name), bytes, &options).unwrap_err();
            assert!(matches!(e, Error::Gzip { .. }), "{name} ({:?}): {e}", options.format);
        }
    }
}

#[test]
fn spamassassin_corpus_reads_with_the_published_counts() {
    let path = shared_data().join("spamassassin/spamassassin.jsonl.gz");
    assert!(path.is_file(), "real-data tests need {} (set TUNEFORGE_DATA)", path.display());
    assert_eq!(TextFormat::from_path(&path), TextFormat::Jsonl);
    let data = read_text(&path, &TextOptions::default()).unwrap();
    assert_eq!(data.len(), 6046);
    assert_eq!(data.label_names, ["ham", "spam"]);
    assert_eq!(data.class_counts(), [4150, 1896]);
    // Raw e-mails: most start with headers.
    let with_headers = data.texts.iter().filter(|t| t.contains("\nSubject:") || t.starts_with("Subject:")).count();
    assert!(with_headers > 5000, "{with_headers}");
}

/// The texts and label names of `data`, row by row.
fn rows_of(data: &TextData) -> Vec<(String, Option<String>)> {
    (0..data.len())
        .map(|i| (data.texts[i].clone(), data.labelled.then(|| data.label_names[data.labels[i] as usize].clone())))
        .collect()
}

/// `bytes` read `size` rows at a time: the same rows, or the same error, as one read.
fn chunks_equal_one_read(bytes: &[u8], options: &TextOptions, size: usize) -> std::result::Result<(), String> {
    let whole = read_text_from(Path::new("t"), bytes, options);
    let chunks: Vec<Result<TextData>> = match read_text_chunks_from(Path::new("t"), bytes, options, size) {
        Ok(c) => c.collect(),
        Err(e) => vec![Err(e)],
    };
    let error = chunks.iter().find_map(|c| c.as_ref().err().map(ToString::to_string));
    if error != whole.as_ref().err().map(ToString::to_string) {
        return Err(format!("errors: chunks {error:?}, whole {:?}", whole.as_ref().err()));
    }
    let Ok(whole) = whole else { return Ok(()) };
    let sizes: Vec<usize> = chunks.iter().flatten().map(TextData::len).collect();
    if sizes.iter().rev().skip(1).any(|&n| n != size) || sizes.iter().sum::<usize>() != whole.len() {
        return Err(format!("chunk sizes {sizes:?} for {} rows by {size}", whole.len()));
    }
    let joined: Vec<_> = chunks.iter().flatten().flat_map(rows_of).collect();
    if joined != rows_of(&whole) {
        return Err("rows differ".into());
    }
    Ok(())
}

/// The real corpus read 1, 100 and 5,000 e-mails at a time: the same rows as one read.
#[test]
fn spamassassin_read_in_chunks_equals_one_read() {
    let path = shared_data().join("spamassassin/spamassassin.jsonl.gz");
    let bytes = std::fs::read(&path).unwrap();
    for size in [1, 100, 5000] {
        chunks_equal_one_read(&bytes, &TextOptions::default(), size).unwrap();
    }
    let chunks: Vec<TextData> =
        read_text_chunks(&path, &TextOptions::default(), 5000).unwrap().map(Result::unwrap).collect();
    assert_eq!(chunks.iter().map(TextData::len).collect::<Vec<_>>(), [5000, 1046]);

    // Capped at 1 MB of text a chunk as well: the same texts and labels, in more chunks,
    // each ending at the first text that takes it to 1 MB (or at 5,000, or at the end).
    let whole = read_text(&path, &TextOptions::default()).unwrap();
    let cap = 1 << 20;
    let capped: Vec<TextData> =
        read_text_chunks(&path, &TextOptions::default(), 5000).unwrap().max_bytes(cap).map(Result::unwrap).collect();
    let total: usize = whole.texts.iter().map(String::len).sum();
    // Every chunk but the last holds at least 1 MB.
    assert!(capped.len() > 2 && capped.len() <= total / cap + 1, "{} chunks of {total} bytes", capped.len());
    for (i, c) in capped.iter().enumerate() {
        let bytes: Vec<usize> = c.texts.iter().map(String::len).collect();
        let before_last: usize = bytes[..bytes.len() - 1].iter().sum();
        assert!(before_last < cap, "chunk {i}: {before_last} bytes before its last text");
        assert!(i + 1 == capped.len() || before_last + bytes[bytes.len() - 1] >= cap, "chunk {i} ended early");
    }
    let texts: Vec<&String> = capped.iter().flat_map(|c| &c.texts).collect();
    assert!(texts.len() == whole.texts.len() && texts.iter().zip(&whole.texts).all(|(a, b)| *a == b));
    let labels: Vec<&str> =
        capped.iter().flat_map(|c| c.labels.iter().map(|&l| c.label_names[l as usize].as_str())).collect();
    let want: Vec<&str> = whole.labels.iter().map(|&l| whole.label_names[l as usize].as_str()).collect();
    assert_eq!(labels, want);
}

/// Unlabelled rows stay unlabelled in every chunk (the first row decided), and a label in a
/// later chunk is the error it is at once, naming its line in the whole file.
#[test]
fn text_chunks_keep_the_first_rows_labelling_and_name_lines_in_the_file() {
    let optional = TextOptions { labels: Labels::IfPresent, ..jsonl() };
    let rows: String = (0..7).map(|i| format!("{{\"text\": \"t{i}\"}}\n")).collect();
    let chunks: Vec<TextData> =
        read_text_chunks_from(Path::new("t"), rows.as_bytes(), &optional, 3).unwrap().map(Result::unwrap).collect();
    assert_eq!(chunks.iter().map(|c| (c.len(), c.labelled)).collect::<Vec<_>>(), [(3, false), (3, false), (1, false)]);
    let bad = rows + "{\"text\": \"t7\", \"label\": \"x\"}\n";
    let got: Vec<_> = read_text_chunks_from(Path::new("t"), bad.as_bytes(), &optional, 3).unwrap().collect();
    assert_eq!(got.len(), 3);
    assert!(matches!(got[2].as_ref().unwrap_err(), Error::TextField { line: 8, .. }), "{:?}", got[2]);
    let csv_bytes = b"text,label\na,x\nb,y\nc,x\n";
    chunks_equal_one_read(csv_bytes, &csv(), 2).unwrap();
    let empty: Vec<_> = read_text_chunks_from(Path::new("t"), &b"text,label\n"[..], &csv(), 2).unwrap().collect();
    assert!(empty.len() == 1 && matches!(empty[0], Err(Error::Empty { .. })));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Read a few rows at a time, any bytes give what one read gives: the same error or the
    /// same rows.
    #[test]
    fn arbitrary_bytes_read_in_chunks_equal_one_read(
        bytes in proptest::collection::vec(
            prop_oneof![Just(b'{'), Just(b'}'), Just(b'"'), Just(b','), Just(b'\n'), Just(b':'), any::<u8>()],
            0..300,
        ),
        prefix in prop_oneof![Just(&b"text,label\n"[..]), Just(&b"{\"text\":\"a\",\"label\":1}\n{\"text\":\"b\",\"label\":2}\n"[..])],
        zipped in any::<bool>(),
        size in 1usize..4,
    ) {
        let mut input = prefix.to_vec();
        input.extend_from_slice(&bytes);
        let input = if zipped { gz(&input) } else { input };
        for options in [jsonl(), csv(), TextOptions { labels: Labels::IfPresent, ..jsonl() }] {
            prop_assert_eq!(chunks_equal_one_read(&input, &options, size), Ok(()));
        }
    }

    /// Whatever the bytes (plain or gzip, JSONL or CSV), the reader returns rows or an
    /// error, never panics, and every label indexes `label_names`.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(
            prop_oneof![Just(b'{'), Just(b'}'), Just(b'"'), Just(b','), Just(b'\n'), Just(b':'), any::<u8>()],
            0..300,
        ),
        prefix in prop_oneof![Just(&b""[..]), Just(&b"text,label\n"[..]), Just(&b"{\"text\":\"a\",\"label\":1}\n"[..])],
        zipped in any::<bool>(),
    ) {
        let mut input = prefix.to_vec();
        input.extend_from_slice(&bytes);
        let input = if zipped { gz(&input) } else { input };
        for options in [jsonl(), csv()] {
            if let Ok(data) = read_text_from(Path::new("fuzz"), input.as_slice(), &options) {
                prop_assert_eq!(data.texts.len(), data.labels.len());
                prop_assert!(data.labels.iter().all(|&l| (l as usize) < data.label_names.len()));
            }
        }
    }
}

#[test]
fn unlabelled_rows_are_read_when_labels_are_optional_and_a_mix_is_refused() {
    let optional = TextOptions { labels: Labels::IfPresent, ..jsonl() };
    // Labelled data reads as under `Required`.
    let data = read_str(ROWS, &optional).unwrap();
    check_rows(&data);
    assert!(data.labelled);
    // No label in the first data row: none expected, none read.
    let data = read_str("\n{\"text\": \"a\"}\n{\"text\": \"b\", \"id\": 2}\n", &optional).unwrap();
    assert_eq!(data.texts, ["a", "b"]);
    assert!(!data.labelled && data.labels.is_empty() && data.label_names.is_empty());
    // A label after unlabelled rows, or a missing one after labelled rows, names its line.
    let e = err(b"{\"text\": \"a\"}\n\n{\"text\": \"b\", \"label\": \"x\"}\n", &optional);
    assert!(matches!(&e, Error::TextField { line: 3, field, .. } if field == "label"), "{e}");
    let e = err(b"{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": \"b\"}\n", &optional);
    assert!(matches!(&e, Error::TextField { line: 2, field, why, .. } if field == "label" && why == "missing"), "{e}");
    // Required labels stay required.
    let e = err(b"{\"text\": \"a\"}\n", &jsonl());
    assert!(matches!(&e, Error::TextField { line: 1, .. }), "{e}");

    // CSV: the header decides.
    let optional = TextOptions { labels: Labels::IfPresent, ..csv() };
    let data = read_text_from(Path::new("new.csv"), &b"id,text\n1,hello\n2,\"a, b\"\n"[..], &optional).unwrap();
    assert_eq!(data.texts, ["hello", "a, b"]);
    assert!(!data.labelled && data.labels.is_empty());
    let data = read_text_from(Path::new("new.csv"), &b"text,label\nhello,x\nbye,y\n"[..], &optional).unwrap();
    assert_eq!((data.labels.as_slice(), data.labelled), (&[0u32, 1][..], true));
    let e = read_text_from(Path::new("new.csv"), &b"id,text\n1,hello\n"[..], &csv()).unwrap_err();
    assert!(matches!(&e, Error::NoSuchColumn { column, .. } if column == "label"), "{e}");
}
