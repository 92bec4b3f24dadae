//! Compiles every `.proto` under `hotline/` with protox (no system `protoc`)
//! and writes the file descriptor set that gRPC reflection serves.

use std::{env, path::PathBuf};

const PROTOS: &[&str] = &[
    "hotline/tickets/v1/tickets.proto",
    "hotline/events/v1/events.proto",
    "hotline/sla/v1/sla.proto",
    "hotline/pager/v1/pager.proto",
    "hotline/admin/v1/admin.proto",
    "hotline/contracts/v1/contracts.proto",
    "hotline/dispatch/v1/dispatch.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("hotline_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
