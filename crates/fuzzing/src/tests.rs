//! Each target on hand-made inputs: one it must accept (so its invariants are really
//! checked, not skipped), one it must refuse, and the checks themselves catching a broken
//! invariant.

use crate::Verdict::{Accepted, Rejected};
use crate::*;

fn idx_bytes(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = magic.to_be_bytes().to_vec();
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[test]
fn idx_accepts_a_consistent_header_and_refuses_a_short_file() {
    assert_eq!(idx(&idx_bytes(0x803, &[2, 2, 3], &[7; 12])), Accepted);
    assert_eq!(idx(&idx_bytes(0x801, &[3], &[1, 2, 3])), Accepted);
    // Any rank with the file's own magic.
    assert_eq!(idx(&idx_bytes(0x802, &[2, 2], &[0; 4])), Accepted);
    assert_eq!(idx(&idx_bytes(0x803, &[2, 2, 3], &[7; 11])), Rejected);
    assert_eq!(idx(&[0, 0, 8]), Rejected);
}

#[test]
#[should_panic(expected = "dims product + header = file length")]
fn the_idx_header_check_catches_a_wrong_length() {
    // What a parser that ignored trailing bytes would accept.
    loader_check_header(&idx_bytes(0x801, &[2], &[1, 2, 3]), 0x801, &[2], 8);
}

fn loader_check_header(file: &[u8], magic: u32, dims: &[usize], offset: usize) {
    crate::loader::check_header(file, magic, dims, offset);
}

#[test]
fn idx_gz_accepts_a_compressed_file_and_refuses_garbage() {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&idx_bytes(0x803, &[1, 2, 2], &[1, 2, 3, 4])).unwrap();
    assert_eq!(idx_gz(&gz.finish().unwrap()), Accepted);
    assert_eq!(idx_gz(b"not gzip at all"), Rejected);
    assert_eq!(idx_gz(b""), Rejected);
}

#[test]
fn csv_accepts_a_table_with_row_names_and_refuses_a_ragged_one() {
    let text = "\"\",ID,V6,class\n\"1\",10,1,benign\n\"2\",11,NA,malignant\n\"3\",12,?,benign\n";
    assert_eq!(csv(text.as_bytes()), Accepted);
    assert_eq!(csv(b"a,b\n1,x\n2,y\nNA,z\n"), Accepted);
    assert_eq!(csv(b"a,b\n1,2\n3\n"), Rejected);
    assert_eq!(csv(b"a,b\n"), Rejected);
}

#[test]
#[should_panic(expected = "invariant broken: canonical rewrite reads back to itself")]
fn the_csv_round_trip_catches_a_lossy_rewrite() {
    same("canonical rewrite reads back to itself", &"a\n1\n", &"a\n1.0\n");
}

#[test]
fn event_log_accepts_events_and_a_torn_tail() {
    let log = concat!(
        r#"{"event":"step","step":1,"epoch":0,"loss":"NaN","samples":32,"seconds":0.01,"lr":0.1,"batch_size":32,"#,
        r#""samples_per_s":3200.0,"samples_per_s_ewma":3200.0,"loss_ewma":"inf"}"#,
        "\n\n",
        r#"{"event":"checkpoint","st"#
    );
    assert_eq!(event_log(log.as_bytes()), Accepted);
    assert_eq!(event_log(b"{\"event\":\"nope\"}\n{\"event\":\"run_end\"}\n"), Rejected);
}

#[test]
fn model_spec_accepts_a_consistent_spec_and_refuses_a_bad_one() {
    let cnn = br#"{"input":[1,6,6],"layers":[{"type":"conv2d","channels":2,"kernel":3},{"type":"batch_norm"},
        {"type":"max_pool2d","size":2},{"type":"flatten"},{"type":"dropout","p":0.5},{"type":"linear","width":3}]}"#;
    assert_eq!(model_spec(cnn), Accepted);
    assert_eq!(model_spec(br#"{"input":[4],"layers":[{"type":"relu"}]}"#), Rejected);
    assert_eq!(model_spec(br#"{"input":[4],"layers":[{"type":"activation","fn":"relu"}]}"#), Rejected);
}

#[test]
fn model_checkpoint_accepts_a_saved_model() {
    use candle_core::Device;
    let spec = tuneforge_model::ModelSpec::preset("mlp:4", &[3], 2).unwrap();
    let model = spec.init_seeded(&Device::Cpu, 3).unwrap();
    let bytes = model.to_safetensors("m.safetensors".as_ref()).unwrap();
    assert_eq!(model_checkpoint(&bytes), Accepted);
    assert_eq!(model_checkpoint(&bytes[..bytes.len() - 1]), Rejected);
}

#[test]
fn optim_checkpoint_accepts_a_saved_checkpoint_even_with_a_stale_hash() {
    use candle_core::{Device, Var};
    use tuneforge_optim::{AdamConfig, Checkpoint, OptimizerConfig, Schedule, ScheduleConfig};
    let w = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
    let config = OptimizerConfig::Adam(AdamConfig::default());
    let mut opt = config.build([("w", w.clone())]).unwrap();
    opt.backward_step(&w.as_tensor().sqr().unwrap().sum_all().unwrap()).unwrap();
    let schedule = Schedule::new(ScheduleConfig::ArticleDecay { beta: 0.5 }, 0.1).unwrap();
    let mut bytes = Checkpoint::capture(opt.as_ref(), Some(&schedule)).unwrap().to_bytes().unwrap();
    assert_eq!(optim_checkpoint(&bytes), Accepted);
    // A changed buffer byte: refused as given, accepted once the hash is made to fit.
    *bytes.last_mut().unwrap() ^= 1;
    assert_eq!(optim_checkpoint(&bytes), Accepted);
    assert_eq!(optim_checkpoint(&bytes[..7]), Rejected);
}

#[test]
fn prep_pipeline_accepts_a_fitted_pipeline() {
    use tuneforge_loader::{CsvOptions, read_csv_from};
    let train = "size,colour,w\n1,red,2\n3,NA,2\nNA,blue,4\n5,red,8\n";
    let table = read_csv_from("t.csv".as_ref(), train.as_bytes(), &CsvOptions::default()).unwrap().table;
    let config: tuneforge_prep::PipelineConfig = serde_json::from_str(
        r#"{"steps": [{"step": "impute", "strategy": "median"}, {"step": "impute", "strategy": "most_frequent"},
            {"step": "clip", "method": {"z_score": {"threshold": 3.0}}}, {"step": "scale", "method": "standard"},
            {"step": "one_hot", "unknown": "ignore"}]}"#,
    )
    .unwrap();
    let (fitted, _) = config.fit(&table).unwrap();
    assert_eq!(prep_pipeline(fitted.to_json().unwrap().as_bytes()), Accepted);
    // Numeric only: the row form is compared with the table form.
    let numeric = tuneforge_prep::PipelineConfig { steps: config.steps[..4].to_vec() };
    let table = read_csv_from("t.csv".as_ref(), "a,b\n1,2\nNA,4\n3,4\n".as_bytes(), &CsvOptions::default()).unwrap();
    let (fitted, _) = numeric.fit(&table.table).unwrap();
    assert!(fitted.row_transform().is_ok());
    assert_eq!(prep_pipeline(fitted.to_json().unwrap().as_bytes()), Accepted);
    assert_eq!(prep_pipeline(br#"{"inputs":[],"steps":[],"outputs":["x"]}"#), Rejected);
}

#[test]
fn policy_accepts_the_default_policy_and_refuses_another_version() {
    let json = serde_json::to_vec(&tuneforge_agent::policy::StudyPolicy::default()).unwrap();
    assert_eq!(policy(&json), Accepted);
    let mut other = tuneforge_agent::policy::StudyPolicy::default();
    other.actor.pop();
    assert_eq!(policy(&serde_json::to_vec(&other).unwrap()), Rejected);
    // A policy of the earlier kind (REINFORCE) is another version.
    let earlier = serde_json::to_vec(&tuneforge_agent::policy::Reinforce::default()).unwrap();
    assert_eq!(policy(&earlier), Rejected);
}

#[test]
fn predictions_accepts_a_written_file_and_refuses_a_gap() {
    assert_eq!(predictions(b"index,label,predicted\n0,3,3\n1,2,1\n"), Accepted);
    assert_eq!(predictions(b"index,label,predicted\n"), Accepted);
    assert_eq!(predictions(b"index,label,predicted\n0,3,3\n2,2,1\n"), Rejected);
}

#[test]
fn study_config_accepts_a_stored_config() {
    use tuneforge_agent::data::DataSource;
    use tuneforge_agent::tune::{Strategy, TuneConfig, study_config_json};
    let config = TuneConfig {
        data: DataSource::parse("digits", None).unwrap(),
        model: "mlp:64".into(),
        strategy: Strategy::Asha,
        budget: std::time::Duration::from_millis(90_500),
        max_trials: None,
        enqueued: Vec::new(),
        stop_when: Default::default(),
        trial_timeout: None,
        seed: 7,
        batch_size: 32,
        lr: 3e-3,
        env: Default::default(),
        checkpoint_every: std::time::Duration::from_secs(5),
        policy: None,
        progress: Default::default(),
        log_steps_every: 10,
        stop: Default::default(),
        cosine: true,
        val_fraction: 0.2,
    };
    assert_eq!(study_config(study_config_json(&config).as_bytes()), Accepted);
    assert_eq!(study_config(b"{}"), Rejected);
}

#[test]
fn budget_accepts_the_documented_forms() {
    for ok in ["90s", "10m", "1h", "42", " 1.5h ", "0.25m"] {
        assert_eq!(budget(ok.as_bytes()), Accepted, "{ok}");
    }
    for bad in ["", "90x", "ten", "-1s", "0", "inf", "NaNs"] {
        assert_eq!(budget(bad.as_bytes()), Rejected, "{bad}");
    }
}

#[test]
fn every_target_is_listed_once() {
    let mut names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), TARGETS.len());
}

#[test]
fn text_accepts_labelled_and_unlabelled_rows_and_refuses_a_mix() {
    assert_eq!(text(b"{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": \"b\", \"label\": 2}\n"), Accepted);
    assert_eq!(text(b"{\"text\": \"a\"}\n{\"text\": \"b\"}\n"), Accepted);
    assert_eq!(text(b"id,text\n1,\"a, b\"\n"), Accepted);
    assert_eq!(text(b"{\"text\": \"a\"}\n{\"text\": \"b\", \"label\": \"x\"}\n"), Rejected);
    assert_eq!(text(b"\xff\xfe"), Rejected);
}

#[test]
fn predict_csv_accepts_rows_with_or_without_labels_and_refuses_a_missing_column() {
    assert_eq!(predict_csv(b"a,b,c,y\n1,0.5,red,no\n2,,blue,yes\n"), Accepted);
    // Columns in another order, an unseen category, an extra column, missing values.
    assert_eq!(predict_csv(b"extra,c,b,a\nz,purple,1,2\n,,NA,\n"), Accepted);
    assert_eq!(predict_csv(b"a,c\n1,red\n"), Rejected);
    assert_eq!(predict_csv(b"a,b,c,y\n1,2,red,maybe\n"), Rejected);
    // A value of the wrong kind in a numeric column.
    assert_eq!(predict_csv(b"a,b,c\nx,2,red\n"), Rejected);
    // Values that leave f32 after scaling, or overflow the outputs: refused, not NaN.
    assert_eq!(predict_csv(b"a,b,c,y\n,-1e308,red,no\n"), Rejected);
    assert_eq!(predict_csv(b"a,b,c\n3e38,3e38,red\n"), Rejected);
    assert_eq!(predict_csv(b"a,b,c\n-3e38,-3e38,red\n"), Rejected);
}
