//! The event envelope <-> the WIT `event` record (documents as JSON bytes).

use super::bindings::{Action, Documents, Event as WitEvent, EventRef};
use crate::event::{Action as HostAction, Event, StoredEvent};

fn json(v: &Option<serde_json::Value>) -> Option<Vec<u8>> {
    v.as_ref()
        .map(|v| serde_json::to_vec(v).expect("JSON serializes"))
}

fn action(a: HostAction) -> Action {
    match a {
        HostAction::Insert => Action::Insert,
        HostAction::Update => Action::Update,
        HostAction::Delete => Action::Delete,
    }
}

/// The WIT record with its own copies of the strings (for the driver bindings), its resource
/// the name the destination gives it.
pub fn to_wit(e: &StoredEvent, resource: &str) -> WitEvent {
    let r = to_wit_ref(e);
    WitEvent {
        resource: resource.to_owned(),
        action: r.action,
        id: r.id.to_owned(),
        data: r.data,
        before: r.before,
        timestamp: r.timestamp.to_owned(),
        source: r.source.map(str::to_owned),
        sequence: r.sequence,
        metadata: r.metadata,
    }
}

/// The WIT record of an event, the envelope's strings borrowed (for lowering into a transform).
pub fn to_wit_ref(e: &StoredEvent) -> EventRef<'_> {
    let ev = &e.event;
    EventRef {
        resource: &ev.resource,
        action: action(ev.action),
        id: &ev.id,
        data: json(&ev.data),
        before: json(&ev.before),
        timestamp: &ev.timestamp,
        source: ev.source.as_deref(),
        sequence: e.sequence,
        metadata: json(&ev.metadata),
    }
}

fn parse(field: &str, bytes: Option<Vec<u8>>) -> Result<Option<serde_json::Value>, String> {
    bytes
        .map(|b| {
            serde_json::from_slice(&b).map_err(|e| format!("invalid JSON in \"{field}\": {e}"))
        })
        .transpose()
}

/// A plugin's event, keeping the input's sequence and acceptance time (its identity in the
/// journal); ids and documents are the plugin's.
pub fn from_wit(w: WitEvent, input: &StoredEvent) -> Result<StoredEvent, String> {
    Ok(StoredEvent {
        sequence: input.sequence,
        received_at_ms: input.received_at_ms,
        backfill: input.backfill.clone(),
        event: Event {
            resource: w.resource,
            action: match w.action {
                Action::Insert => HostAction::Insert,
                Action::Update => HostAction::Update,
                Action::Delete => HostAction::Delete,
            },
            id: w.id,
            data: parse("data", w.data)?,
            before: parse("before", w.before)?,
            timestamp: w.timestamp,
            source: w.source,
            metadata: parse("metadata", w.metadata)?,
        },
    })
}

/// The input event with the documents a plugin changed (`update`): the envelope is the input's.
pub fn with_documents(input: &StoredEvent, documents: Documents) -> Result<StoredEvent, String> {
    let ev = &input.event;
    let data = match documents.data {
        Some(bytes) => parse("data", Some(bytes))?,
        None => ev.data.clone(),
    };
    let before = match documents.before {
        Some(bytes) => parse("before", Some(bytes))?,
        None => ev.before.clone(),
    };
    Ok(StoredEvent {
        sequence: input.sequence,
        received_at_ms: input.received_at_ms,
        backfill: input.backfill.clone(),
        event: Event {
            resource: ev.resource.clone(),
            action: ev.action,
            id: ev.id.clone(),
            data,
            before,
            timestamp: ev.timestamp.clone(),
            source: ev.source.clone(),
            metadata: ev.metadata.clone(),
        },
    })
}
