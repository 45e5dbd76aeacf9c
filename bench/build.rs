//! Compiles the subset of etcd's v3 API the side-by-side scenario uses
//! (`proto/etcd/*.proto`) with protox, as `gwmon-proto` does for gwmon's own API: no system
//! `protoc`, and the same tonic as the rest of the workspace.

use std::error::Error;

const PROTO_ROOT: &str = "proto";
const FILES: [&str; 2] = ["proto/etcd/mvcc.proto", "proto/etcd/rpc.proto"];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    for f in FILES {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(FILES, [PROTO_ROOT])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
