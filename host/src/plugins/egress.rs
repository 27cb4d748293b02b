//! Outbound HTTP of driver plugins: every request passes this allow-list before any DNS
//! lookup or connection; refusals are counted and logged by the host (guests may hide them).

use http_body_util::BodyExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::Arc;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// `host` (any port) or `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    pub host: String,
    pub port: Option<u16>,
}

impl AllowedHost {
    pub fn parse(text: &str) -> Result<AllowedHost, String> {
        let text = text.trim();
        let (host, port) = match text.rsplit_once(':') {
            // `[::1]` is an address without a port; `[::1]:8080` and `host:8080` have one.
            Some((h, p)) if !text.ends_with(']') && (!h.contains(':') || h.starts_with('[')) => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| format!("\"{text}\": the port must be a number"))?;
                (h, Some(port))
            }
            _ => (text, None),
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if host.is_empty() || host.contains('/') {
            return Err(format!("\"{text}\" is not a host or host:port"));
        }
        Ok(AllowedHost { host, port })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabel {
    pub plugin: String,
}

/// Refused requests, per plugin (`replicator_plugin_requests_denied_total`).
pub type DeniedRequests = Family<PluginLabel, Counter>;

/// The policy of one plugin instance.
pub struct Egress {
    plugin: Arc<str>,
    allowed: Arc<Vec<AllowedHost>>,
    denied: Counter,
    /// `host:port` of each request refused since [`Egress::take_refused`]: a guest's own error
    /// for it may say nothing of the allow-list.
    refused: Vec<String>,
}

impl Egress {
    pub fn new(plugin: Arc<str>, allowed: Arc<Vec<AllowedHost>>, denied: &DeniedRequests) -> Self {
        let denied = denied
            .get_or_create(&PluginLabel {
                plugin: plugin.to_string(),
            })
            .clone();
        Egress {
            plugin,
            allowed,
            denied,
            refused: Vec::new(),
        }
    }

    /// No network at all (transforms).
    pub fn none(plugin: Arc<str>, denied: &DeniedRequests) -> Self {
        Egress::new(plugin, Arc::new(Vec::new()), denied)
    }

    /// The requests refused since the last call (each `host:port` once).
    pub fn take_refused(&mut self) -> Vec<String> {
        std::mem::take(&mut self.refused)
    }

    fn allows(&self, host: &str, port: u16) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        self.allowed
            .iter()
            .any(|a| a.host == host && a.port.is_none_or(|p| p == port))
    }
}

type Sent = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
>;

impl WasiHttpHooks for Egress {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        drop(fut);
        let uri = request.uri();
        let host = uri.host().unwrap_or_default().to_string();
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        if !self.allows(&host, port) {
            self.denied.inc();
            tracing::warn!(plugin = %self.plugin, host = %host, port, "outbound request refused: host not in the plugin's allowHosts");
            let target = format!("{host}:{port}");
            if !self.refused.contains(&target) {
                self.refused.push(target);
            }
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        Box::new(async move {
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_entries() {
        assert_eq!(
            AllowedHost::parse("127.0.0.1:9200").unwrap(),
            AllowedHost {
                host: "127.0.0.1".into(),
                port: Some(9200)
            }
        );
        assert_eq!(
            AllowedHost::parse("Search.Example.com").unwrap().host,
            "search.example.com"
        );
        assert!(AllowedHost::parse("http://x/y").is_err());
        for (text, host, port) in [
            ("[::1]", "::1", None),
            ("[::1]:8080", "::1", Some(8080)),
            ("::1", "::1", None),
        ] {
            let parsed = AllowedHost::parse(text).unwrap();
            assert_eq!((parsed.host.as_str(), parsed.port), (host, port), "{text}");
        }
        let e = Egress::new(
            "p".into(),
            Arc::new(vec![AllowedHost::parse("localhost:80").unwrap()]),
            &Default::default(),
        );
        assert!(e.allows("LOCALHOST", 80));
        assert!(!e.allows("localhost", 81));
        assert!(!e.allows("evil.example", 80));
    }
}
