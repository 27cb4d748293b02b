//! Applies inserts, updates and deletes as s3db.js would store them, without reading first:
//! an insert or update replaces the object (so a redelivery changes nothing and a replay
//! converges), a delete removes the object and its partition references.

use futures::StreamExt;
use serde_json::{Value, json};
use std::collections::HashMap;
use tokio::sync::OnceCell;

use super::config::S3dbConfig;
use crate::drivers::{BatchOutcome, Delivery, DeliveryError, Driver};
use crate::event::Action;
use crate::s3db::{Database, Resource, S3dbError};

pub struct S3dbDriver {
    config: S3dbConfig,
    db: OnceCell<Database>,
}

impl S3dbDriver {
    pub fn new(config: S3dbConfig) -> Self {
        S3dbDriver {
            config,
            db: OnceCell::new(),
        }
    }

    async fn db(&self) -> Result<&Database, DeliveryError> {
        self.db
            .get_or_try_init(|| async {
                Database::connect(self.config.connection.clone())
                    .await
                    .map_err(to_delivery)
            })
            .await
    }

    /// The record to store: the event's data without `id`, with timestamps when the resource keeps them.
    fn record(resource: &Resource, d: &Delivery) -> Value {
        let e = &d.event.event;
        let mut data = e.data.clone().unwrap_or_else(|| json!({}));
        if let Some(m) = data.as_object_mut() {
            m.remove("id");
            if resource.timestamps {
                if e.action == Action::Insert {
                    m.entry("createdAt")
                        .or_insert_with(|| Value::String(e.timestamp.clone()));
                }
                m.entry("updatedAt")
                    .or_insert_with(|| Value::String(e.timestamp.clone()));
            }
        }
        data
    }

    async fn apply(
        &self,
        db: &Database,
        resource: &Result<Resource, DeliveryError>,
        d: &Delivery,
    ) -> Result<(), DeliveryError> {
        let resource = resource.as_ref().map_err(Clone::clone)?;
        let e = &d.event.event;
        match e.action {
            Action::Insert | Action::Update => {
                db.put_record(
                    resource,
                    &e.id,
                    &Self::record(resource, d),
                    e.before.as_ref(),
                )
                .await
            }
            Action::Delete => {
                let known: Vec<&Value> = [e.data.as_ref(), e.before.as_ref()]
                    .into_iter()
                    .flatten()
                    .collect();
                db.delete_record(resource, &e.id, &known).await
            }
        }
        .map_err(to_delivery)
    }
}

fn to_delivery(e: S3dbError) -> DeliveryError {
    match e {
        S3dbError::Store(s) => DeliveryError::new(s.kind, s.message),
        // Nothing delivers to this database until someone mends its s3db.json, and no record is
        // at fault: the records wait (no attempt spent) while the status says why.
        e @ S3dbError::Catalog { .. } => DeliveryError::unavailable(e.to_string()),
        S3dbError::Record(m) => DeliveryError::permanent(m),
    }
}

#[async_trait::async_trait]
impl Driver for S3dbDriver {
    async fn init(&self) -> Result<(), DeliveryError> {
        self.db().await.map(|_| ())
    }

    async fn deliver(&self, batch: &[Delivery]) -> BatchOutcome {
        let db = self.db().await?;
        // One schema change per resource and batch, typed from the batch's first values.
        let mut samples: HashMap<&str, Vec<&Value>> = HashMap::new();
        for d in batch {
            let entry = samples.entry(d.destination()).or_default();
            if d.event.event.action != Action::Delete {
                entry.extend(d.event.event.data.as_ref());
            }
        }
        let mut resources: HashMap<&str, Result<Resource, DeliveryError>> = HashMap::new();
        for (name, values) in samples {
            resources.insert(
                name,
                db.ensure(name, &values, self.config.behavior)
                    .await
                    .map_err(to_delivery),
            );
        }
        let writes: Vec<_> = batch
            .iter()
            .map(|d| self.apply(db, &resources[d.destination()], d))
            .collect();
        let results = futures::stream::iter(writes)
            .buffered(self.config.parallelism)
            .collect::<Vec<_>>()
            .await;
        Ok(results)
    }

    fn requests_made(&self) -> u64 {
        self.db.get().map(|db| db.store.requests()).unwrap_or(0)
    }
}
