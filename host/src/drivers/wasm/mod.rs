//! A custom destination written as a Wasm component (`driver: wasm`): the same pipeline as the
//! built-in drivers (batching, order, retries, dead letters) around the component's `replicate`.

pub mod config;
mod sink;

pub use config::WasmConfig;
pub use sink::WasmSink;
