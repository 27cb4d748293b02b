// `replicator plugin new` embeds the SDKs and templates of ../guest-examples/sdk
// (include_dir!): rebuild when any of them changes.
fn main() {
    println!("cargo:rerun-if-changed=../guest-examples/sdk");
    println!("cargo:rerun-if-changed=../wit");
}
