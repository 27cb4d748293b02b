//! The `resources` option in all its syntaxes, normalised into routes.
//!
//! A route says: events of source `resource` with one of `actions` go to `destination`
//! (an s3db resource, a table, a queue...), optionally through a transform.

use serde_json::Value;

use crate::delivery::{ANY_RESOURCE, ActionSet, Route, TransformRef};
use crate::drivers::DriverKind;
use crate::event::{Action, kind_of, resource_name_problem};
use crate::options::{Problems, Section, index, join};

/// Parses `resources` (at `path`) for a replicator of `driver`.
pub fn parse(value: &Value, path: &str, driver: DriverKind, problems: &Problems) -> Vec<Route> {
    let mut routes = Vec::new();
    match value {
        // 1. a list of names
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(name) if !name.trim().is_empty() => {
                        check_name(name, &index(path, i), problems);
                        routes.push(Route {
                            resource: name.clone(),
                            destination: name.clone(),
                            named: false,
                            actions: ActionSet::ALL,
                            transform: None,
                            options: Default::default(),
                        })
                    }
                    other => problems.add(
                        index(path, i),
                        format!("must be a resource name, found {}", kind_of(other)),
                    ),
                }
            }
        }
        Value::Object(map) => {
            for (resource, target) in map {
                let at = join(path, resource);
                check_name(resource, &at, problems);
                match target {
                    // 5. multi-destination
                    Value::Array(targets) => {
                        if targets.is_empty() {
                            problems.add(&at, "lists no destinations");
                        }
                        for (i, t) in targets.iter().enumerate() {
                            if let Some(r) =
                                destination(resource, t, &index(&at, i), driver, problems, false)
                            {
                                routes.push(r);
                            }
                        }
                    }
                    t => {
                        if let Some(r) = destination(resource, t, &at, driver, problems, true) {
                            routes.push(r);
                        }
                    }
                }
            }
        }
        other => problems.add(
            path,
            format!(
                "must be a list of resource names or a map of resource to destination, found {}",
                kind_of(other)
            ),
        ),
    }
    if routes.is_empty() && matches!(value, Value::Array(a) if a.is_empty()) {
        problems.add(path, "lists no resources");
    }
    routes
}

/// One destination of `resource`: `true`, a name (2) or an object (3, 4).
fn destination(
    resource: &str,
    target: &Value,
    path: &str,
    driver: DriverKind,
    problems: &Problems,
    allow_bool: bool,
) -> Option<Route> {
    let plain = |destination: &str, named: bool| Route {
        resource: resource.to_string(),
        destination: destination.to_string(),
        named,
        actions: ActionSet::ALL,
        transform: None,
        options: Default::default(),
    };
    match target {
        Value::Bool(true) if allow_bool => Some(plain(resource, false)),
        Value::Bool(false) if allow_bool => None,
        Value::String(name) if !name.trim().is_empty() => Some(plain(name, true)),
        Value::Object(_) => {
            let mut s = Section::open(target, path.to_string(), problems)?;
            let mut name = None;
            for key in driver.destination_keys() {
                if let Some(n) = s.string(key) {
                    if *key == "resource" {
                        check_name(&n, &s.path_of(key), problems);
                    }
                    if name.is_some() {
                        s.problem(
                            key,
                            format!(
                                "conflicts with another destination name; give one of {}",
                                driver.destination_keys().join(", ")
                            ),
                        );
                    }
                    name = Some(n);
                }
            }
            let actions = s
                .value("actions")
                .map(|v| actions(v, &s.path_of("actions"), problems))
                .unwrap_or(ActionSet::ALL);
            let transform = s
                .value("transform")
                .and_then(|v| transform(v, &s.path_of("transform"), problems));
            let mut options = serde_json::Map::new();
            for key in driver.route_options() {
                if let Some(v) = s.value(key) {
                    options.insert(key.to_string(), v.clone());
                }
            }
            for key in s.unread() {
                if ALL_NAME_KEYS.contains(&key.as_str()) {
                    s.problem(
                        key,
                        format!(
                            "does not apply to driver {} (use {})",
                            driver.name(),
                            driver.destination_keys().join(" or ")
                        ),
                    );
                }
            }
            s.finish();
            Some(Route {
                resource: resource.to_string(),
                named: name.is_some(),
                destination: name.unwrap_or_else(|| resource.to_string()),
                actions,
                transform,
                options,
            })
        }
        other => {
            let expected = if allow_bool {
                "true, a destination name, an object or a list of destinations"
            } else {
                "a destination name or an object"
            };
            problems.add(
                path,
                format!("must be {expected}, found {}", kind_of(other)),
            );
            None
        }
    }
}

/// Resource names the config uses must be names intake accepts and destinations can hold.
fn check_name(name: &str, path: &str, problems: &Problems) {
    if name == ANY_RESOURCE {
        return;
    }
    if let Some(problem) = resource_name_problem(name) {
        problems.add(path, problem);
    }
}

const ALL_NAME_KEYS: [&str; 5] = ["resource", "table", "queue", "queueUrl", "queueName"];

fn actions(value: &Value, path: &str, problems: &Problems) -> ActionSet {
    let Value::Array(items) = value else {
        problems.add(
            path,
            format!(
                "must be a list such as [insert, update, delete], found {}",
                kind_of(value)
            ),
        );
        return ActionSet::ALL;
    };
    if items.is_empty() {
        problems.add(
            path,
            "must name at least one action (insert, update, delete)",
        );
        return ActionSet::ALL;
    }
    let mut set = ActionSet::NONE;
    for (i, item) in items.iter().enumerate() {
        match item.as_str().map(|s| (s, Action::parse(s))) {
            Some((_, Some(a))) => set.add(a),
            Some((s, None)) => problems.add(
                index(path, i),
                format!("unknown action \"{s}\" (expected insert, update or delete)"),
            ),
            None => problems.add(
                index(path, i),
                format!("must be an action name, found {}", kind_of(item)),
            ),
        }
    }
    set
}

fn transform(value: &Value, path: &str, problems: &Problems) -> Option<TransformRef> {
    let parsed = match value {
        Value::String(p) if p.ends_with(".wasm") => Some(TransformRef {
            component: p.into(),
            config: Value::Null,
        }),
        Value::String(p) => {
            problems.add(
                path,
                format!("must be the path of a .wasm component, found \"{p}\""),
            );
            None
        }
        Value::Object(_) => {
            let mut s = Section::open(value, path.to_string(), problems)?;
            let component = s.required_string("component");
            let config = s.value("config").cloned().unwrap_or(Value::Null);
            s.finish();
            component.map(|c| TransformRef {
                component: c.into(),
                config,
            })
        }
        other => {
            problems.add(
                path,
                format!(
                    "must be a component path or {{component, config}}, found {}",
                    kind_of(other)
                ),
            );
            None
        }
    };
    if let Some(t) = &parsed
        && !t.component.is_file()
    {
        problems.add(path, format!("no component file {}", t.component.display()));
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn routes(v: Value, driver: DriverKind) -> (Vec<Route>, Vec<String>) {
        let problems = Problems::default();
        let r = parse(&v, "resources", driver, &problems);
        (
            r,
            problems
                .into_vec()
                .into_iter()
                .map(|p| p.to_string())
                .collect(),
        )
    }

    #[test]
    fn every_syntax() {
        let (r, p) = routes(json!(["users", "orders"]), DriverKind::Webhook);
        assert!(p.is_empty());
        assert_eq!(r.len(), 2);

        let (r, p) = routes(
            json!({
                "users": "people",
                "orders": {"table": "order_rows", "actions": ["insert", "update"]},
                "carts": true,
                "skipped": false,
                "events": ["events_a", {"table": "events_b", "actions": ["delete"]}]
            }),
            DriverKind::Postgresql,
        );
        assert!(p.is_empty(), "{p:?}");
        let names: Vec<_> = r
            .iter()
            .map(|r| (r.resource.as_str(), r.destination.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("carts", "carts"),
                ("events", "events_a"),
                ("events", "events_b"),
                ("orders", "order_rows"),
                ("users", "people")
            ]
        );
        assert!(!r[3].actions.contains(Action::Delete));
        assert_eq!(r[2].actions.names(), ["delete"]);
    }

    #[test]
    fn bad_actions_and_keys_are_named() {
        let (_, p) = routes(
            json!({"users": {"actions": ["inserted"], "table": "x"}}),
            DriverKind::Webhook,
        );
        assert_eq!(
            p[0],
            "resources.users.actions[0]: unknown action \"inserted\" (expected insert, update or delete)"
        );
        assert!(
            p[1].starts_with("resources.users.table: does not apply to driver webhook"),
            "{p:?}"
        );
    }

    #[test]
    fn transforms_are_parsed_and_their_file_checked() {
        let (r, p) = routes(
            json!({"users": {"transform": {"component": "t.wasm", "config": {"a": 1}}}}),
            DriverKind::S3db,
        );
        assert_eq!(r[0].transform.as_ref().unwrap().config, json!({"a": 1}));
        assert_eq!(p, ["resources.users.transform: no component file t.wasm"]);
        let (_, p) = routes(
            json!({"users": {"transform": "strip.js"}}),
            DriverKind::Webhook,
        );
        assert!(
            p[0].contains("must be the path of a .wasm component"),
            "{p:?}"
        );
    }

    #[test]
    fn names_no_destination_can_hold_are_refused() {
        let (_, p) = routes(
            json!({"a/b": true, "users": {"resource": "x=y"}, "*": true}),
            DriverKind::S3db,
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].starts_with("resources.a/b: \"resource\" \"a/b\" cannot be held"),
            "{p:?}"
        );
        assert!(p[1].starts_with("resources.users.resource: "), "{p:?}");
        let (_, p) = routes(json!(["..", "ok"]), DriverKind::Webhook);
        assert_eq!(p, ["resources[0]: \"resource\" cannot be \"..\""]);
    }
}
