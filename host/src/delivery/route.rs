//! Routes: which events of a replicator go where (source resource -> destination name, which
//! actions, through which transform). Built by the config reader, used by pipeline and drivers.

use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;

use crate::event::Action;

/// A route for this resource name takes every resource, each to its own name.
pub const ANY_RESOURCE: &str = "*";

/// Which actions a route replicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionSet([bool; 3]);

impl ActionSet {
    pub const ALL: ActionSet = ActionSet([true; 3]);
    pub const NONE: ActionSet = ActionSet([false; 3]);

    pub fn add(&mut self, action: Action) {
        self.0[action as usize] = true;
    }

    pub fn contains(self, action: Action) -> bool {
        self.0[action as usize]
    }

    pub fn names(self) -> Vec<&'static str> {
        Action::ALL
            .into_iter()
            .filter(|a| self.contains(*a))
            .map(Action::as_str)
            .collect()
    }
}

/// A reference to a Wasm transform component, kept for the plugin runtime.
#[derive(Debug, Clone, PartialEq)]
pub struct TransformRef {
    pub component: PathBuf,
    pub config: Value,
}

/// Source resource -> destination, for one replicator.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub resource: String,
    pub destination: String,
    /// The entry named its destination (a string or one of the driver's destination keys);
    /// otherwise `destination` is the resource's own name.
    pub named: bool,
    pub actions: ActionSet,
    pub transform: Option<TransformRef>,
    /// The driver's own keys of the entry (BigQuery's `mutability`, `tableOptions`), checked
    /// by the driver.
    pub options: serde_json::Map<String, Value>,
}

/// Which of a replicator's routes take an event: the routes naming its resource, else those
/// for every resource (`*`); of those, the ones that take its action.
pub struct RouteIndex {
    by_resource: HashMap<String, Vec<usize>>,
    actions: Vec<ActionSet>,
}

impl RouteIndex {
    pub fn new(routes: &[Route]) -> Self {
        let mut by_resource: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, r) in routes.iter().enumerate() {
            by_resource.entry(r.resource.clone()).or_default().push(i);
        }
        RouteIndex {
            by_resource,
            actions: routes.iter().map(|r| r.actions).collect(),
        }
    }

    /// The routes (indices) taking an event; `None` when no route is for its resource (as
    /// opposed to routes for it that all leave its action out: an empty list).
    pub fn routes_of(&self, resource: &str, action: Action) -> Option<Vec<usize>> {
        let candidates = self
            .by_resource
            .get(resource)
            .or_else(|| self.by_resource.get(ANY_RESOURCE))?;
        Some(
            candidates
                .iter()
                .copied()
                .filter(|r| self.actions[*r].contains(action))
                .collect(),
        )
    }
}
