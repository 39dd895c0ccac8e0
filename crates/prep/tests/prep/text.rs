//! Text pipelines: each cleaning step on crafted inputs, the tokenizer, a vocabulary fitted
//! on training texts only, truncation and padding, JSON round trips and corrupt JSON, and
//! the real SpamAssassin corpus.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use tuneforge_loader::{TextOptions, read_text};
use tuneforge_prep::{Error, FittedTextPipeline, TextPipelineConfig, TextStep, VocabConfig};

/// A pipeline with `steps` and a vocabulary of every training token (min_count 1), every
/// occurrence kept (`distinct` off).
fn pipeline(steps: Vec<TextStep>, train: &[&str]) -> FittedTextPipeline {
    let vocab = VocabConfig { min_count: 1, distinct: false, ..VocabConfig::default() };
    let config = TextPipelineConfig { steps, vocab };
    config.fit(train).unwrap().0
}

fn clean_with(step: TextStep, text: &str) -> String {
    pipeline(vec![step], &["x"]).clean(text)
}

/// White space runs collapsed, so that "a tag becomes a space" is not checked space by space.
fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

// ------------------------------------------------------------------ cleaning steps

const SIMPLE_EMAIL: &str = "From alice@example.com  Mon Jan  1 00:00:00 2002\n\
Return-Path: <alice@example.com>\n\
Subject: a folded\n\
 \tsubject line\n\
To: bob@example.com\n\
\n\
Hello Bob,\n\
Second line: not a header.\n";

#[test]
fn email_body_drops_the_header_block_with_folded_lines() {
    let body = "Hello Bob,\nSecond line: not a header.\n";
    assert_eq!(clean_with(TextStep::EmailBody, SIMPLE_EMAIL), body);
    // Without the mbox line, and with CRLF line ends.
    let no_from = SIMPLE_EMAIL.split_once('\n').unwrap().1;
    assert_eq!(clean_with(TextStep::EmailBody, no_from), body);
    let crlf = no_from.replace('\n', "\r\n");
    assert_eq!(clean_with(TextStep::EmailBody, &crlf), body.replace('\n', "\r\n"));
    // Headers only: no body.
    assert_eq!(clean_with(TextStep::EmailBody, "Subject: hi\nTo: x@y.org\n"), "");
}

#[test]
fn email_body_leaves_text_without_headers_as_is() {
    for text in [
        "Hello there.\nThis: looks like a field but the first line is not one.\n\nEnd.",
        "Dear friend: you have WON!\n\nClick below.",
        "Subject: fine\nbut this line is neither a field nor a continuation\n\nbody",
        "\nSubject: after a blank first line\n\nbody",
        "",
    ] {
        assert_eq!(clean_with(TextStep::EmailBody, text), text);
    }
}

const MULTIPART: &str = "Return-Path: <spam@example.com>\n\
Subject: =?utf-8?q?offer?=\n\
MIME-Version: 1.0\n\
Content-Type: multipart/mixed;\n\
\tboundary=\"OUTER\"\n\
\n\
This is the preamble.\n\
--OUTER\n\
Content-Type: multipart/alternative; boundary=INNER\n\
\n\
--INNER\n\
Content-Type: text/plain; charset=utf-8\n\
Content-Transfer-Encoding: base64\n\
\n\
UGxhaW4gcGFydCB3aXRoIGNhZsOpLgpT\n\
ZWUgeW91IGF0IDEwOjMwIQo=\n\
--INNER\n\
Content-Type: text/html; charset=iso-8859-1\n\
Content-Transfer-Encoding: quoted-printable\n\
\n\
<p>HTML part with caf=E9, 3=3D3 and a soft=\n\
break</p>\n\
--INNER--\n\
--OUTER\n\
Content-Type: image/png; name=\"logo.png\"\n\
Content-Transfer-Encoding: base64\n\
\n\
iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk\n\
--OUTER--\n\
This is the epilogue.\n";

#[test]
fn email_body_decodes_multipart_base64_and_quoted_printable_parts() {
    let body = clean_with(TextStep::EmailBody, MULTIPART);
    let plain = "Plain part with café.\nSee you at 10:30!";
    let html = "<p>HTML part with café, 3=3 and a softbreak</p>";
    let (p, h) = (body.find(plain), body.find(html));
    assert!(p.is_some() && h.is_some(), "{body:?}");
    assert!(p < h, "parts in message order: {body:?}");
    for absent in ["preamble", "epilogue", "Return-Path", "Content-Type", "iVBOR", "UGxh", "=E9", "OUTER", "INNER"] {
        assert!(!body.contains(absent), "{absent:?} in {body:?}");
    }
    // The e-mail default then strips the HTML and normalises.
    let email = pipeline(TextPipelineConfig::email().steps, &["x"]);
    assert_eq!(
        email.tokens(MULTIPART),
        [
            "plain",
            "part",
            "with",
            "café",
            "see",
            "you",
            "at",
            "__num__",
            "__num__",
            "!",
            "html",
            "part",
            "with",
            "café",
            "__num__",
            "__num__",
            "and",
            "a",
            "softbreak"
        ]
    );
}

#[test]
fn strip_html_removes_tags_scripts_styles_comments_and_decodes_entities() {
    let html = "<!DOCTYPE html><html><head><style type=\"text/css\">p { color: red }</style>\
<SCRIPT>if (a < b) { document.write(\"<b>hidden</b>\"); }</SCRIPT></head>\
<body><!-- a comment <p>with a tag</p> --><p class=\"x>y\">Fish&nbsp;&amp; chips &lt;3 &quot;q&quot; \
it&#39;s &#x41;&#66;&apos;</p>a < b <user@example.com> &bogus; &#xZZ;<br/>end</body></html>";
    let text = clean_with(TextStep::StripHtml, html);
    assert_eq!(squash(&text), "Fish & chips <3 \"q\" it's AB' a < b <user@example.com> &bogus; &#xZZ; end");
    // Tags become a space: words on both sides of a tag stay apart.
    assert_eq!(clean_with(TextStep::StripHtml, "one<br>two</p>three"), "one two three");
    // An unterminated comment or script swallows the rest, and nothing panics on truncation.
    assert_eq!(squash(&clean_with(TextStep::StripHtml, "keep <!-- open")), "keep");
    assert_eq!(squash(&clean_with(TextStep::StripHtml, "keep <script>x")), "keep");
    assert_eq!(squash(&clean_with(TextStep::StripHtml, "keep <a href=\"x")), "keep");
    assert_eq!(clean_with(TextStep::StripHtml, "é&amp;ü<"), "é&ü<");
}

#[test]
fn lowercase_is_unicode_aware() {
    assert_eq!(clean_with(TextStep::Lowercase, "ÉCOLE Straße FREE!"), "école straße free!");
}

#[test]
fn urls_emails_and_numbers_become_placeholders() {
    let urls = clean_with(
        TextStep::NormalizeUrls,
        "see http://example.com/a?b=1&c=%20, or WWW.Example.org. Also (https://x.y/z) \
ftp://files.example.net/pub/f.tar.gz <http://a.b/c> awww.not-a-url",
    );
    assert_eq!(squash(&urls), "see __url__ , or __url__ . Also ( __url__ ) __url__ < __url__ > awww.not-a-url");
    let emails = clean_with(
        TextStep::NormalizeEmails,
        "mail john.doe+spam@mail.example.co.uk, <root@example.org> not root@localhost nor a@b.c1 or @x.com.",
    );
    assert_eq!(squash(&emails), "mail __email__ , < __email__ > not root@localhost nor a@b.c1 or @x.com.");
    let numbers = clean_with(TextStep::NormalizeNumbers, "pay 1,000.50 or 42 now, v2 at 3. 10:30 -7");
    assert_eq!(squash(&numbers), "pay __num__ or __num__ now, v __num__ at __num__ . __num__ : __num__ - __num__");
}

// ------------------------------------------------------------------ tokenizer and vocabulary

#[test]
fn tokens_are_word_runs_and_three_symbols() {
    let p = pipeline(vec![], &["x"]);
    assert_eq!(
        p.tokens("Hello, WORLD! $5 100% naïve_word ünï-cödé #tag a.b"),
        ["Hello", "WORLD", "!", "$", "5", "100", "%", "naïve_word", "ünï", "cödé", "tag", "a", "b"]
    );
    assert!(p.tokens(" ,.;-- ").is_empty());
}

#[test]
fn decode_of_encode_gives_the_tokens_back() {
    let train = ["Cheap PILLS!!! Visit www.pills.example now", "Meeting at 10:30, see you <b>there</b>"];
    let p = pipeline(TextPipelineConfig::plain().steps, &train);
    for text in train {
        let ids = p.encode(text);
        assert!(!ids.contains(&FittedTextPipeline::UNK), "{text}");
        assert_eq!(p.decode(&ids), p.tokens(text));
    }
    // Unknown ids and UNK decode to "<unk>".
    assert_eq!(p.decode(&[FittedTextPipeline::UNK, 1_000_000, FittedTextPipeline::PAD]), ["<unk>", "<unk>", "<pad>"]);
}

#[test]
fn vocabulary_is_fitted_on_training_texts_only() {
    let train = ["apple banana", "apple cherry", "banana apple"];
    let config = TextPipelineConfig { steps: vec![], vocab: VocabConfig { min_count: 2, ..VocabConfig::default() } };
    let (p, report) = config.fit(&train).unwrap();
    // apple ×3, banana ×2 kept, most frequent first; cherry ×1 is below min_count.
    assert_eq!(p.vocabulary(), ["<pad>", "<unk>", "apple", "banana"]);
    assert_eq!((p.id("apple"), p.id("banana"), p.id("cherry")), (Some(2), Some(3), None));
    assert_eq!(p.vocab_size(), 4);
    // "durian" appears only in a test text.
    let unk = FittedTextPipeline::UNK;
    assert_eq!(p.encode("durian apple cherry banana"), [unk, 2, unk, 3]);
    assert_eq!(
        (
            report.documents,
            report.tokens,
            report.distinct,
            report.kept,
            report.truncated_documents,
            report.empty_documents
        ),
        (3, 6, 3, 2, 0, 0)
    );
    assert!(report.to_string().contains("3 documents"), "{report}");

    // Ties broken by byte order, whatever the order of appearance; max_size caps the
    // vocabulary (PAD and UNK included).
    let tied = TextPipelineConfig {
        steps: vec![],
        vocab: VocabConfig { min_count: 1, max_size: 4, max_len: 8, distinct: false },
    };
    let (p, report) = tied.fit(&["zeta beta", "beta zeta alpha", "", "!!"]).unwrap();
    assert_eq!(p.vocabulary(), ["<pad>", "<unk>", "!", "beta"]);
    assert_eq!((report.distinct, report.kept, report.empty_documents), (4, 2, 1));
}

#[test]
fn encodings_are_truncated_and_padded_to_max_len() {
    let config = TextPipelineConfig {
        steps: vec![],
        vocab: VocabConfig { min_count: 1, max_size: 100, max_len: 4, distinct: false },
    };
    let (p, report) = config.fit(&["a b c d e f", "a"]).unwrap();
    assert_eq!(report.truncated_documents, 1);
    assert_eq!(p.max_len(), 4);
    let id = |t: &str| p.id(t).unwrap();
    assert_eq!(p.encode("f e d c b a"), [id("f"), id("e"), id("d"), id("c")]);
    let mut out = [9.0f32; 4];
    p.encode_padded("b zzz", &mut out);
    assert_eq!(out, [id("b") as f32, 1.0, 0.0, 0.0]);
    let all = p.encode_all(&["a b c d e", "", "c"]);
    let want: Vec<f32> =
        [id("a"), id("b"), id("c"), id("d"), 0, 0, 0, 0, id("c"), 0, 0, 0].iter().map(|&i| i as f32).collect();
    assert_eq!(all, want);
    assert!(p.encode_all::<&str>(&[]).is_empty());
}

#[test]
fn distinct_keeps_each_token_once_and_counts_texts() {
    let vocab = |distinct| VocabConfig { min_count: 2, max_size: 100, max_len: 3, distinct };
    let train = ["a a a", "b", "b c", "c"];
    // Occurrences: a 3, b 2, c 2. Texts: a 1, b 2, c 2.
    let (every, _) = TextPipelineConfig { steps: vec![], vocab: vocab(false) }.fit(&train).unwrap();
    assert_eq!(every.vocabulary(), ["<pad>", "<unk>", "a", "b", "c"]);
    let (once, report) = TextPipelineConfig { steps: vec![], vocab: vocab(true) }.fit(&train).unwrap();
    assert_eq!(once.vocabulary(), ["<pad>", "<unk>", "b", "c"]);
    assert_eq!(report.tokens, 5, "a text's repeats are not counted");
    let id = |t: &str| once.id(t).unwrap();
    // First occurrences, in order; the limit counts distinct tokens.
    assert_eq!(once.encode("c c b c zz b yy"), [id("c"), id("b"), FittedTextPipeline::UNK]);
    assert_eq!(once.tokens("c c b c"), ["c", "b"]);
    assert_eq!(every.encode("c c b c").len(), 3);
}

// ------------------------------------------------------------------ errors and serde

#[test]
fn bad_configs_and_empty_training_sets_are_errors() {
    let with = |vocab: VocabConfig| TextPipelineConfig { steps: vec![], vocab };
    let none: [&str; 0] = [];
    assert_eq!(TextPipelineConfig::plain().fit(&none).unwrap_err(), Error::NoTexts);
    let e = with(VocabConfig { max_len: 0, ..VocabConfig::default() }).fit(&["a"]).unwrap_err();
    assert!(matches!(e, Error::InvalidTextConfig { field: "max_len", value: 0, .. }), "{e}");
    let e = with(VocabConfig { max_size: 2, ..VocabConfig::default() }).fit(&["a"]).unwrap_err();
    assert!(matches!(e, Error::InvalidTextConfig { field: "max_size", value: 2, .. }), "{e}");
}

#[test]
fn configs_read_from_json_with_defaults() {
    let config: TextPipelineConfig =
        serde_json::from_str(r#"{"steps": [{"step": "email_body"}, {"step": "strip_html"}, {"step": "lowercase"}, {"step": "normalize_urls"}, {"step": "normalize_emails"}, {"step": "normalize_numbers"}]}"#)
            .unwrap();
    assert_eq!(config, TextPipelineConfig::email());
    assert_eq!(config.vocab, VocabConfig { min_count: 2, max_size: 30_000, max_len: 800, distinct: true });
    let plain = TextPipelineConfig::plain();
    assert!(!plain.steps.contains(&TextStep::EmailBody));
    assert_eq!(plain.steps, TextPipelineConfig::email().steps[1..]);
    assert!(serde_json::from_str::<TextPipelineConfig>(r#"{"steps": [{"step": "stem"}]}"#).is_err());
}

#[test]
fn fitted_pipeline_round_trips_through_json_and_rejects_corruption() {
    let train = ["Win $1000 now!!! http://spam.example", "Lunch at noon? Bob", "win a prize now"];
    let (p, _) = TextPipelineConfig::email().fit(&train).unwrap();
    let json = p.to_json().unwrap();
    let back = FittedTextPipeline::from_json(&json).unwrap();
    assert_eq!(back, p);
    let via_serde: FittedTextPipeline = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
    assert_eq!(via_serde, p);
    let probe = ["WIN now at http://x.example!", "unknown words only"];
    assert_eq!(back.encode_all(&probe), p.encode_all(&probe));

    // A duplicated token: the typed error from from_json, a failure from plain serde.
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let vocab = value["vocab"].as_array_mut().unwrap();
    assert!(vocab.len() >= 4, "{vocab:?}");
    vocab[3] = vocab[2].clone();
    let dup = value.to_string();
    let e = FittedTextPipeline::from_json(&dup).unwrap_err();
    assert!(matches!(&e, Error::DuplicateToken { first: 2, second: 3, .. }), "{e}");
    assert!(serde_json::from_str::<FittedTextPipeline>(&dup).is_err());

    // PAD and UNK out of place, max_len 0, not JSON at all.
    let mut swapped: serde_json::Value = serde_json::from_str(&json).unwrap();
    swapped["vocab"].as_array_mut().unwrap().swap(0, 1);
    let e = FittedTextPipeline::from_json(&swapped.to_string()).unwrap_err();
    assert!(matches!(e, Error::InvalidVocabulary { .. }), "{e}");
    let mut zero: serde_json::Value = serde_json::from_str(&json).unwrap();
    zero["config"]["vocab"]["max_len"] = 0.into();
    let e = FittedTextPipeline::from_json(&zero.to_string()).unwrap_err();
    assert!(matches!(e, Error::InvalidTextConfig { field: "max_len", .. }), "{e}");
    assert!(matches!(FittedTextPipeline::from_json("{").unwrap_err(), Error::Json { .. }));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Any text — mail headers, MIME, HTML and entity fragments, non-ASCII — is cleaned and
    /// encoded without a panic; ids are in range and no longer than `max_len`.
    #[test]
    fn any_text_is_cleaned_and_encoded_without_panic(
        parts in proptest::collection::vec(
            prop_oneof![
                Just("Content-Type: multipart/mixed; boundary=b\n".to_string()),
                Just("Content-Transfer-Encoding: base64\n".to_string()),
                Just("Content-Transfer-Encoding: quoted-printable\n".to_string()),
                Just("--b\n".to_string()),
                Just("--b--\n".to_string()),
                Just("\n".to_string()),
                Just("From x\n".to_string()),
                Just(" folded\n".to_string()),
                Just("<script".to_string()),
                Just("<!--".to_string()),
                Just("&#x".to_string()),
                Just("=E9=".to_string()),
                Just("http://".to_string()),
                Just("@a.bc".to_string()),
                "[<>&#;=!$%@./:a-z0-9 \\n\"'é漢]{0,12}",
                any::<String>(),
            ],
            0..24,
        ),
    ) {
        let text: String = parts.concat();
        let p = pipeline(TextPipelineConfig::email().steps, &["a b c", "content type"]);
        let _ = p.clean(&text);
        let ids = p.encode(&text);
        prop_assert!(ids.len() <= p.max_len());
        prop_assert!(ids.iter().all(|&i| (i as usize) < p.vocab_size()));
        prop_assert_eq!(p.decode(&ids).len(), ids.len());
    }
}

// ------------------------------------------------------------------ real data

/// `TUNEFORGE_DATA`, else the workplace's `../shared/datasets` next to the repository.
fn shared_data() -> PathBuf {
    let dir = std::env::var_os("TUNEFORGE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets"));
    let corpus = dir.join("spamassassin/spamassassin.jsonl.gz");
    assert!(corpus.is_file(), "real-data tests need {} (set TUNEFORGE_DATA)", corpus.display());
    dir
}

#[test]
fn spamassassin_email_pipeline_fits_on_the_training_rows() {
    let data = read_text(&shared_data().join("spamassassin/spamassassin.jsonl.gz"), &TextOptions::default()).unwrap();
    let cut = data.len() * 8 / 10;
    let (train, test) = data.texts.split_at(cut);
    let (p, report) = TextPipelineConfig::email().fit(train).unwrap();
    assert_eq!(report.documents, cut);

    // The raw messages carry headers; the cleaned bodies do not.
    let raw = train.iter().filter(|t| t.contains("Return-Path:")).count();
    assert!(raw > cut / 2, "{raw} of {cut} raw messages have a Return-Path header");
    let cleaned: Vec<String> = train.iter().map(|t| p.clean(t)).collect();
    let left = cleaned.iter().filter(|t| t.contains("return-path:")).count();
    assert!(left * 20 < raw, "{left} of {raw} bodies still have a Return-Path line");
    let received = cleaned.iter().filter(|t| t.contains("\nreceived: from")).count();
    assert!(received * 20 < cut, "{received} bodies still have Received lines");

    assert!(p.vocab_size() > 5000, "{report}");
    assert!(report.kept + 2 == p.vocab_size() && report.distinct > report.kept, "{report}");
    let lengths: Vec<usize> = test.iter().map(|t| p.encode(t).len()).collect();
    let mean = lengths.iter().sum::<usize>() as f64 / lengths.len() as f64;
    assert!(mean > 50.0, "mean encoded length {mean}");
    assert!(lengths.iter().all(|&n| n <= p.max_len()));
    // Held-out rows are mostly known words.
    let ids: Vec<u32> = test.iter().flat_map(|t| p.encode(t)).collect();
    let unk = ids.iter().filter(|&&i| i == FittedTextPipeline::UNK).count();
    assert!(unk * 5 < ids.len(), "{unk} of {} held-out tokens unknown", ids.len());
    eprintln!(
        "spamassassin: {report}; Return-Path in {raw} raw, {left} cleaned; Received in {received} cleaned; \
         mean held-out length {mean:.1}; {unk} of {} held-out tokens unknown",
        ids.len()
    );
}
