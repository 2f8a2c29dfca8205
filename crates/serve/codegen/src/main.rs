//! Generates the egodriver contract's Rust code (prost messages, the tonic server trait) from the
//! committed descriptor set, with no `protoc`: `compile_fds` reads the descriptors directly.
//! Only `egodriver.EgodriverService` gets server code; the other files' services (sensorsim's
//! renderer) are dropped, their messages kept.

use std::path::Path;

use prost::Message;
use prost_types::FileDescriptorSet;

fn main() {
    let serve = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bytes = std::fs::read(serve.join("proto/alpasim_egodriver.binpb"))
        .expect("crates/serve/proto/alpasim_egodriver.binpb");
    let mut fds = FileDescriptorSet::decode(bytes.as_slice()).expect("a FileDescriptorSet");
    for file in &mut fds.file {
        if file.package() != "egodriver" {
            file.service.clear();
        }
    }
    let out = serve.join("src/pb");
    std::fs::create_dir_all(&out).expect("create src/pb");
    tonic_prost_build::configure()
        .out_dir(&out)
        .build_client(false)
        .build_server(true)
        .build_transport(false)
        .compile_fds(fds)
        .expect("generate");
    println!("wrote {}", out.display());
}
