//! Module validation at deploy time and the compile-once cache.

mod common;
use common::*;
use sluice_sandbox::{module_hash, ErrorKind, ModuleRegistry, SandboxError, MAX_MODULE_BYTES};
use std::sync::Arc;

fn compile_error(bytes: &[u8]) -> SandboxError {
    let err = registry().compile(bytes).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Compile, "{err}");
    assert_eq!(err.code(), "ERR_COMPILE");
    err
}

#[test]
fn missing_exports_are_named() {
    let e = compile_error(&wasm("missing_handle"));
    assert!(
        e.message().contains("missing export `sluice_handle`"),
        "{e}"
    );
    let e = compile_error(&wasm("missing_memory"));
    assert!(e.message().contains("missing export `memory`"), "{e}");
}

#[test]
fn wrongly_typed_exports_are_named_with_both_signatures() {
    let e = compile_error(&wasm("wrong_alloc_type"));
    assert!(
        e.message()
            .contains("export `sluice_alloc` has type (i64) -> (i32)"),
        "{e}"
    );
    assert!(e.message().contains("expected (i32) -> (i32)"), "{e}");
}

#[test]
fn unknown_and_mistyped_imports_are_named() {
    let e = compile_error(&wasm("unknown_import"));
    assert!(e.message().contains("unknown import env::abort"), "{e}");
    let e = compile_error(&wasm("wrong_import_type"));
    assert!(
        e.message()
            .contains("import sluice::emit has type (i32, i32) -> (i32)"),
        "{e}"
    );
}

#[test]
fn malformed_bytes_are_refused() {
    let e = compile_error(b"definitely not wasm");
    assert!(e.message().contains("not a WebAssembly binary"), "{e}");
    compile_error(b"");
    // Right header, garbage body.
    let e = compile_error(b"\0asm\x01\0\0\0\x01\xff\xff\xff");
    assert!(e.message().contains("invalid module"), "{e}");
    // Text format is not accepted by the runtime, only binaries.
    compile_error(b"(module)");
}

#[test]
fn components_are_refused() {
    let e = compile_error(b"\0asm\x0d\0\x01\0");
    assert!(e.message().contains("component"), "{e}");
}

#[test]
fn oversized_modules_are_refused_before_compiling() {
    let mut bytes = wasm("probe");
    bytes.resize(MAX_MODULE_BYTES + 1, 0);
    let reg = registry();
    let e = reg.compile(&bytes).unwrap_err();
    assert_eq!(e.code(), "ERR_COMPILE");
    assert!(e.message().contains("cap"), "{e}");
    assert_eq!(reg.compilations(), 0);
}

#[test]
fn precompiled_artifacts_are_refused() {
    // An artifact this very engine produced is still refused: the registry never deserializes.
    let engine = engine();
    let artifact = engine.wasmtime().precompile_module(&wasm("probe")).unwrap();
    let e = compile_error(&artifact);
    assert!(e.message().contains("precompiled"), "{e}");
}

#[test]
fn same_bytes_same_hash_compiled_once() {
    let bytes = wasm("probe");
    let reg = registry();
    let a = reg.compile(&bytes).unwrap();
    let b = reg.compile(&bytes.clone()).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(reg.compilations(), 1);
    assert_eq!(a.hash(), module_hash(&bytes));
    assert!(
        a.hash().starts_with("sha256:") && a.hash().len() == 7 + 64,
        "{}",
        a.hash()
    );
    assert!(Arc::ptr_eq(&reg.get(a.hash()).unwrap(), &a));

    let other = reg.compile(&wasm("loop")).unwrap();
    assert_ne!(other.hash(), a.hash());
    assert_eq!(reg.compilations(), 2);
    assert_eq!(reg.len(), 2);

    assert!(reg.remove(a.hash()));
    assert!(reg.get(a.hash()).is_none());
    reg.compile(&bytes).unwrap();
    assert_eq!(reg.compilations(), 3);
}

#[test]
fn known_sha256() {
    // sha256 of the empty string, to pin the format.
    assert_eq!(
        module_hash(b""),
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn concurrent_compiles_of_the_same_bytes_run_cranelift_once() {
    let reg = Arc::new(ModuleRegistry::new(engine()));
    let bytes = Arc::new(wasm("probe"));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (reg, bytes) = (reg.clone(), bytes.clone());
            std::thread::spawn(move || reg.compile(&bytes).unwrap())
        })
        .collect();
    let modules: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(modules.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])));
    assert_eq!(reg.compilations(), 1);
}

#[test]
fn failed_compiles_are_not_cached() {
    let reg = registry();
    reg.compile(&wasm("missing_handle")).unwrap_err();
    reg.compile(&wasm("missing_handle")).unwrap_err();
    assert_eq!(reg.len(), 0);
    assert_eq!(reg.compilations(), 2);
}
