//! Compiles `proto/gwmon/v1/*.proto` into Rust with protox (a pure-Rust protobuf compiler),
//! so building gwmon never needs a system `protoc`.

use std::error::Error;
use std::path::PathBuf;

/// The include root: imports are written relative to it (`gwmon/v1/common.proto`).
const PROTO_ROOT: &str = "proto";
/// Where the package's files live under [`PROTO_ROOT`].
const PROTO_DIR: &str = "proto/gwmon/v1";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    println!("cargo:rerun-if-changed={PROTO_DIR}");

    // Every .proto of the package, sorted so that the generated code does not depend on
    // the directory's iteration order.
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(PROTO_DIR)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "proto") {
            println!("cargo:rerun-if-changed={}", path.display());
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(format!("no .proto files found in {PROTO_DIR}").into());
    }

    let fds = protox::compile(&files, [PROTO_ROOT])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Small stream buffers: a monitor holds a stream per gateway (src/codec.rs).
        .codec_path("crate::codec::LeanCodec")
        .compile_fds(fds)?;
    Ok(())
}
