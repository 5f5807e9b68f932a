//! Arbitrary UTF-8 into `DurationArg::parse`: never a panic; a refusal quotes the input
//! exactly; an acceptance never came from an empty string or one with whitespace.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stent::storage::records::duration_ms;
use stent::{DurationArg, Error};

fuzz_target!(|input: &str| {
    match DurationArg::parse(input) {
        Ok(d) => {
            assert!(!input.is_empty());
            assert!(!input.chars().any(char::is_whitespace), "{input:?}");
            // What the engine does with it next: milliseconds, saturating.
            let _ = duration_ms(d);
        }
        Err(Error::InvalidDuration {
            input: quoted,
            reason,
        }) => {
            assert_eq!(quoted, input);
            assert!(!reason.is_empty(), "{input:?}");
        }
        Err(other) => panic!("{input:?}: {other:?}"),
    }
});
