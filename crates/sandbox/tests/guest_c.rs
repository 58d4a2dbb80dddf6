//! The C header's example handler through the sandbox. `npm run build:guests:c` compiles it with
//! Debian's clang and lld; `npm test` installs them when missing and builds it first.

mod common;
use common::*;
use sluice_sandbox::{Envelope, ErrorKind, Outcome, Sandbox, SandboxOptions};

fn threshold(config: &str) -> Result<Sandbox, sluice_sandbox::SandboxError> {
    let path = format!(
        "{}/../../guest/c/build/threshold.wasm",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e} (build it first)"));
    let module = registry().compile(&bytes)?;
    Sandbox::new(
        module,
        SandboxOptions {
            config: config.as_bytes().to_vec(),
            ..opts(&["fraud.*"])
        },
    )
}

fn order<'a>(id: &'a str, data: &'a [u8]) -> Envelope<'a> {
    Envelope {
        id,
        event_type: "order.created",
        ..event(data)
    }
}

#[test]
fn c_threshold_handler() {
    let sb = threshold("").unwrap();
    let r = sb.handle(&order("o-9", b"1200"), None);
    assert_eq!(r.outcome, Outcome::Ack);
    assert_eq!(r.emits.len(), 1);
    assert_eq!(r.emits[0].topic, "fraud.flagged");
    assert_eq!(r.emits[0].data, b"o-9");

    assert!(sb.handle(&order("o-1", b"999"), None).emits.is_empty());
    let r = sb.handle(&order("o-2", b"12x"), None);
    assert_eq!(r.outcome, Outcome::Reject);
    assert!(r.logs[0].message.contains("decimal"), "{:?}", r.logs);

    let strict = threshold("10").unwrap();
    assert_eq!(strict.handle(&order("o-3", b"11"), None).emits.len(), 1);
    let err = threshold("ten").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Instantiate);
}
