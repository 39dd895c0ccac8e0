//! `tuneforge-monitor`: per-step training telemetry (loss, samples/s, step latency
//! quantiles, gradient norm, memory), an append-only JSONL event log, anomaly detection
//! (NaN/Inf, loss spikes, throughput drops, exploding gradients) and OpenTelemetry export.
//! It knows nothing of candle or of the model.
//!
//! Not implemented yet: this crate is planned in `docs/ARCHITECTURE.md` and issue 5. It
//! holds no code until the real thing lands, so nothing here pretends to work.
