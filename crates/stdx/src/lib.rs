//! deltaplan-stdx: the small helpers every deltaplan crate shares, each written once
//! (rust-analyzer's `stdx` idea). It depends on nothing of deltaplan's.
//!
//! - [`seed`]: SplitMix64 mixing, seeded generators for named streams, Fisher-Yates shuffles.
//! - [`fs`]: atomic file writes (temp file, fsync, rename, fsync of the directory) and the
//!   clean-up of temporaries a killed writer left behind.
//! - [`fuzz`]: mutation fuzzing of parsers on stable Rust (used by the test suites).
//! - [`fault`]: named fault-injection points (abort, full disk) for crash-safety tests; off
//!   unless the environment asks.
//! - [`panic_message`]: the text of a caught panic.

pub mod fault;
pub mod fs;
pub mod fuzz;
pub mod seed;

/// The message a caught panic carries (`panic!` with a literal or with formatting), or "" if
/// its payload is something else.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn panic_messages_are_read_from_both_payload_kinds() {
        let literal = std::panic::catch_unwind(|| panic!("plain")).unwrap_err();
        let formatted = std::panic::catch_unwind(|| panic!("{} {}", "with", 2)).unwrap_err();
        let other = std::panic::catch_unwind(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(super::panic_message(literal.as_ref()), "plain");
        assert_eq!(super::panic_message(formatted.as_ref()), "with 2");
        assert_eq!(super::panic_message(other.as_ref()), "");
    }
}
