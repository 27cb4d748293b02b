// `replicator plugin new` embeds the SDKs and templates under ../sdk (include_dir!): rebuild
// when any of them changes.
fn main() {
    println!("cargo:rerun-if-changed=../sdk");
    println!("cargo:rerun-if-changed=../wit");
}
