#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tuneforge_fuzzing::predict_csv(data);
});
