//! Integration tests for `tuneforge-eval`.
