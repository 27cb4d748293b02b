//! `driver: wasm` options: `component`, `allowHosts`; every other key is the component's own
//! config, handed to its `init`.

use serde_json::{Map, Value};
use std::path::PathBuf;

use crate::options::{Section, index};
use crate::plugins::egress::AllowedHost;

#[derive(Debug, Clone)]
pub struct WasmConfig {
    pub component: PathBuf,
    /// Hosts the component may reach over HTTP (`host` or `host:port`); none by default.
    pub allow_hosts: Vec<AllowedHost>,
    /// The component's own config.
    pub config: Value,
}

pub fn parse(s: &mut Section) -> Option<WasmConfig> {
    let component = s.required_string("component").map(PathBuf::from);
    if let Some(c) = &component
        && !c.is_file()
    {
        s.problem("component", format!("no component file {}", c.display()));
    }
    let mut allow_hosts = Vec::new();
    let path = s.path_of("allowHosts");
    match s.value("allowHosts") {
        None => {}
        Some(Value::Array(list)) => {
            for (i, v) in list.iter().enumerate() {
                match v.as_str().map(AllowedHost::parse) {
                    Some(Ok(h)) => allow_hosts.push(h),
                    Some(Err(e)) => s.problems().add(index(&path, i), e),
                    None => s
                        .problems()
                        .add(index(&path, i), "must be a host or host:port"),
                }
            }
        }
        Some(_) => s.problem("allowHosts", "must be a list of hosts (host or host:port)"),
    }
    let own: Map<String, Value> = s
        .unread()
        .into_iter()
        .filter_map(|k| s.value(k).map(|v| (k.clone(), v.clone())))
        .collect();
    Some(WasmConfig {
        component: component?,
        allow_hosts,
        config: Value::Object(own),
    })
}
