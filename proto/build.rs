//! Compiles the .proto files with protox (pure Rust), so building needs no
//! system `protoc`.

fn main() {
    let files = [
        "proto/cairn/agent/v1/agent.proto",
        "proto/cairn/admin/v1/admin.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"]).expect("the .proto files compile");
    tonic_prost_build::configure()
        .compile_fds(fds)
        .expect("generating the gRPC code");
}
