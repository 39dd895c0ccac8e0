//! The serde form of the optimisers.

use candle_core::{DType, Device, Var};
use tuneforge_optim::{AdamConfig, AdamWConfig, Error, OptimizerConfig, SgdConfig};

#[test]
fn json_with_defaults() {
    let c: OptimizerConfig = serde_json::from_str(r#"{"kind":"adamw","lr":1e-3,"weight_decay":0.01}"#).unwrap();
    assert_eq!(c, OptimizerConfig::AdamW(AdamWConfig { lr: 1e-3, weight_decay: 0.01, ..AdamWConfig::default() }));
    // AdamW's default weight decay is PyTorch's 0.01; Adam's is 0.
    let c: OptimizerConfig = serde_json::from_str(r#"{"kind":"adamw"}"#).unwrap();
    assert_eq!(
        c,
        OptimizerConfig::AdamW(AdamWConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 })
    );
    let c: OptimizerConfig = serde_json::from_str(r#"{"kind":"adam","lr":0.5}"#).unwrap();
    assert_eq!(c, OptimizerConfig::Adam(AdamConfig { lr: 0.5, ..AdamConfig::default() }));
    assert_eq!(AdamConfig::default().weight_decay, 0.0);
    let c: OptimizerConfig = serde_json::from_str(r#"{"kind":"sgd","lr":0.1,"momentum":0.9,"nesterov":true}"#).unwrap();
    assert_eq!(c, OptimizerConfig::Sgd(SgdConfig { lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 0.0 }));
    assert_eq!((c.kind(), c.lr()), ("sgd", 0.1));

    let back: OptimizerConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(back, c);
    let v = serde_json::to_value(OptimizerConfig::AdamW(AdamWConfig::default())).unwrap();
    assert_eq!(v["kind"], "adamw");
}

#[test]
fn unknown_kinds_and_fields_are_refused() {
    for bad in [
        r#"{"kind":"adagrad","lr":0.1}"#,
        r#"{"kind":"adamw","learning_rate":0.1}"#,
        r#"{"lr":0.1}"#,
        r#"{"kind":"sgd","lr":"fast"}"#,
    ] {
        assert!(serde_json::from_str::<OptimizerConfig>(bad).is_err(), "{bad}");
    }
}

#[test]
fn out_of_range_hyper_parameters_are_typed_errors() {
    let p = || [("p", Var::zeros(2, DType::F32, &Device::Cpu).unwrap())];
    let cases = [
        (OptimizerConfig::Adam(AdamConfig { lr: -1.0, ..AdamConfig::default() }), "lr"),
        (OptimizerConfig::Adam(AdamConfig { beta1: 1.0, ..AdamConfig::default() }), "beta1"),
        (OptimizerConfig::AdamW(AdamWConfig { beta2: f64::NAN, ..AdamWConfig::default() }), "beta2"),
        (OptimizerConfig::AdamW(AdamWConfig { eps: 0.0, ..AdamWConfig::default() }), "eps"),
        (OptimizerConfig::AdamW(AdamWConfig { weight_decay: -0.1, ..AdamWConfig::default() }), "weight_decay"),
        (OptimizerConfig::Sgd(SgdConfig { momentum: f64::INFINITY, ..SgdConfig::default() }), "momentum"),
    ];
    for (config, field) in cases {
        let e = config.build(p()).err().unwrap();
        assert!(matches!(e, Error::InvalidHyperParameter { field: f, .. } if f == field), "{config:?}: {e}");
        assert!(config.validate().is_err());
    }
}

#[test]
fn build_makes_each_kind_and_reports_its_config() {
    let vars = || vec![("a".to_string(), Var::zeros((2, 3), DType::F32, &Device::Cpu).unwrap())];
    for config in [
        OptimizerConfig::Sgd(SgdConfig::default()),
        OptimizerConfig::Adam(AdamConfig::default()),
        OptimizerConfig::AdamW(AdamWConfig { lr: 0.02, ..AdamWConfig::default() }),
    ] {
        let mut opt = config.build(vars()).unwrap();
        assert_eq!(opt.config(), config);
        opt.set_learning_rate(0.5);
        assert_eq!(opt.config().lr(), 0.5);
        assert_eq!(opt.learning_rate(), 0.5);
    }
    let dup = vec![
        ("a", Var::zeros(1, DType::F32, &Device::Cpu).unwrap()),
        ("a", Var::zeros(1, DType::F32, &Device::Cpu).unwrap()),
    ];
    let e = OptimizerConfig::Sgd(SgdConfig::default()).build(dup).err().unwrap();
    assert!(matches!(&e, Error::DuplicateParam { name } if name == "a"), "{e}");
}
