//! Polling mode: lists each captured resource's records a page at a time, compares the page
//! with what was seen (stamps), reads what differs and journals the changes together with the
//! page's position, so a pass that stops (a crash, an outage) resumes at its last page.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

use super::source::{CaptureError, Source, Wanted};
use super::stats::{Part, PassReport};
use crate::config::sources::PollConfig;
use crate::journal::Seen;
use crate::s3db::store::Stamp;

/// Keys listed per request (S3's maximum).
const PAGE: usize = 1000;

/// Where a pass is: past `after` in `resource`, with its figures so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Position {
    resource: String,
    after: Option<String>,
    started_ms: i64,
    objects: u64,
    changes: u64,
}

/// Runs passes until shutdown, `interval` apart.
pub async fn run(source: Arc<Source>, config: PollConfig, shutdown: CancellationToken) {
    let mut outage = super::Outage::default();
    while !shutdown.is_cancelled() {
        let outcome = tokio::select! {
            r = pass(&source, &config) => r,
            _ = shutdown.cancelled() => return,
        };
        let go_on = match outcome {
            Ok(report) => {
                outage.reset();
                source.counters.running(Part::Poll);
                tracing::debug!(
                    source = source.id(),
                    objects = report.objects,
                    changes = report.changes,
                    seconds = report.seconds,
                    "polling pass done"
                );
                source.counters.pass(report);
                super::pause(config.interval, &shutdown).await
            }
            Err(e) => {
                source.counters.failed(Part::Poll, &e.to_string());
                outage.wait(&shutdown).await
            }
        };
        if !go_on {
            return;
        }
    }
}

/// One pass over every captured resource, from where the last one stopped.
async fn pass(source: &Source, config: &PollConfig) -> Result<PassReport, CaptureError> {
    let started = Instant::now();
    let requests_before = source.db.store.requests();
    let resumed = match source.journal.capture_position(source.id()).await? {
        Some(bytes) => serde_json::from_slice::<Option<Position>>(&bytes)
            .map_err(crate::journal::JournalError::from)?,
        None => None,
    };
    source.db.reload().await?;
    let mut resources: Vec<String> = source
        .db
        .resource_names()
        .into_iter()
        .filter(|r| source.admits(r).is_ok())
        .collect();
    resources.sort();
    let mut position = resumed.clone().unwrap_or_else(|| Position {
        resource: String::new(),
        after: None,
        started_ms: chrono::Utc::now().timestamp_millis(),
        objects: 0,
        changes: 0,
    });
    for resource in resources {
        if resource < position.resource {
            continue;
        }
        let mut after = if resource == position.resource {
            position.after.clone()
        } else {
            None
        };
        position.resource = resource.clone();
        loop {
            let prefix = source.db.conn.key(&format!("resource={resource}/data/id="));
            let start = after.as_ref().map(|id| format!("{prefix}{id}"));
            let listed: Vec<(String, Stamp)> = source
                .db
                .store
                .list(&prefix, start.as_deref(), PAGE)
                .await
                .map_err(crate::s3db::S3dbError::from)?
                .into_iter()
                .filter_map(|l| Some((l.key.strip_prefix(&prefix)?.to_string(), l.stamp)))
                .filter(|(id, _)| !id.is_empty() && !id.contains('/'))
                .collect();
            let last_page = listed.len() < PAGE;
            let through = if last_page {
                None
            } else {
                listed.last().map(|(id, _)| id.clone())
            };
            let seen = source
                .journal
                .seen_between(source.id(), &resource, after.clone(), through.clone())
                .await?;
            let wanted = differences(&listed, &seen)
                .into_iter()
                .map(|id| Wanted::record(&resource, id))
                .collect();
            position.objects += listed.len() as u64;
            if let Some((id, _)) = listed.last() {
                position.after = Some(id.clone());
            }
            let bytes = serde_json::to_vec(&position).expect("a position serializes");
            position.changes += source
                .capture(wanted, Some(bytes), config.parallelism)
                .await? as u64;
            if last_page {
                break;
            }
            after = through;
        }
    }
    // The pass is complete: the next one starts from the beginning.
    source
        .journal
        .observe(source.id(), Vec::new(), Some(b"null".to_vec()))
        .await?;
    Ok(PassReport {
        objects: position.objects,
        changes: position.changes,
        requests: source.db.store.requests() - requests_before,
        seconds: if resumed.is_some() {
            (chrono::Utc::now().timestamp_millis() - position.started_ms) as f64 / 1000.0
        } else {
            started.elapsed().as_secs_f64()
        },
        finished_at: crate::event::now_rfc3339(),
    })
}

/// Ids of a page that need reading: listed and new, listed with another stamp (or read too
/// soon after a change to trust it), seen and no longer listed (deleted, read to confirm).
/// Both lists are in id order.
fn differences<'a>(listed: &'a [(String, Stamp)], seen: &'a [(String, Seen)]) -> Vec<&'a str> {
    let mut out = Vec::new();
    let (mut l, mut s) = (listed.iter().peekable(), seen.iter().peekable());
    loop {
        match (l.peek(), s.peek()) {
            (Some((lid, stamp)), Some((sid, was))) => match lid.as_str().cmp(sid.as_str()) {
                std::cmp::Ordering::Less => {
                    out.push(lid.as_str());
                    l.next();
                }
                std::cmp::Ordering::Greater => {
                    out.push(sid.as_str());
                    s.next();
                }
                std::cmp::Ordering::Equal => {
                    if !stamp.matches(&was.fingerprint, was.etag.as_deref()) || was.unsettled {
                        out.push(lid.as_str());
                    }
                    l.next();
                    s.next();
                }
            },
            (Some((lid, _)), None) => {
                out.push(lid.as_str());
                l.next();
            }
            (None, Some((sid, _))) => {
                out.push(sid.as_str());
                s.next();
            }
            (None, None) => return out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(f: &str) -> Stamp {
        Stamp {
            fingerprint: f.into(),
            etag: None,
            last_modified_ms: 0,
        }
    }

    fn seen(f: &str, unsettled: bool) -> Seen {
        Seen {
            fingerprint: f.into(),
            etag: None,
            digest: String::new(),
            last_modified_ms: 0,
            unsettled,
            sequencer: None,
        }
    }

    #[test]
    fn new_changed_unsettled_and_gone_records_are_read() {
        let listed = vec![
            ("a".to_string(), stamp("1")),
            ("b".to_string(), stamp("2")),
            ("c".to_string(), stamp("3")),
            ("e".to_string(), stamp("5")),
        ];
        let was = vec![
            ("b".to_string(), seen("2", false)),
            ("c".to_string(), seen("3", true)),
            ("d".to_string(), seen("4", false)),
            ("e".to_string(), seen("x", false)),
            ("f".to_string(), seen("6", false)),
        ];
        assert_eq!(differences(&listed, &was), vec!["a", "c", "d", "e", "f"]);
        assert!(differences(&listed[1..2], &was[..1]).is_empty());
        // A listing without ETags (some servers) matches on the rest; two ETags must agree.
        let mut with_etag = was[..1].to_vec();
        with_etag[0].1.etag = Some("e1".into());
        assert!(differences(&listed[1..2], &with_etag).is_empty());
        let mut listed_etag = listed[1..2].to_vec();
        listed_etag[0].1.etag = Some("e2".into());
        assert_eq!(differences(&listed_etag, &with_etag), vec!["b"]);
    }
}
