//! Key normalisation: walks the user's JSON tree alongside the JSON Schema generated from the
//! `file` types, before serde sees it.
//!
//! This is where the original's viper behaviour is reproduced deliberately and fixed where it
//! hurt: struct keys match case-insensitively (`"SubscriptionID"` works) and are rewritten to
//! their canonical spelling; keys of user maps (labels, tags, kubeReserved, evictionHard) are
//! kept exactly, dots and case included (viper lowercased and split them). Unknown keys are
//! dropped with a warning naming the nearest known key. Leaves of the wrong JSON type become
//! `Problem`s and are dropped, so deserialisation afterwards cannot fail and every problem in
//! the file is reported at once. `null` means "not set".

use serde_json::{Map, Value};

use super::Problem;

/// Schema walker; `defs` is the `$defs` table of the root schema.
pub(super) struct Normalizer<'a> {
    defs: Option<&'a Map<String, Value>>,
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
}

/// Renders a JSON path segment for a struct key.
pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Renders a JSON path segment for a user map key, quoted so dots stay unambiguous.
pub(super) fn join_map(path: &str, key: &str) -> String {
    format!("{path}[{}]", Value::String(key.to_string()))
}

/// A short rendering of a JSON value for messages (long values are cut).
pub(super) fn show(value: &Value) -> String {
    let s = value.to_string();
    if s.chars().count() > 120 {
        let cut: String = s.chars().take(117).collect();
        format!("{cut}...")
    } else {
        s
    }
}

fn type_names(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Range of an integer schema from schemars' `format` (`uint8`, `int64`, ...).
fn int_range(schema: &Value) -> (i128, i128) {
    match schema.get("format").and_then(Value::as_str) {
        Some("uint8") => (0, u8::MAX.into()),
        Some("uint16") => (0, u16::MAX.into()),
        Some("uint32") => (0, u32::MAX.into()),
        Some("uint64") | Some("uint") => (0, u64::MAX.into()),
        Some("int32") => (i32::MIN.into(), i32::MAX.into()),
        _ => (i64::MIN.into(), i64::MAX.into()),
    }
}

impl<'a> Normalizer<'a> {
    pub(super) fn new(root: &'a Value) -> Self {
        Normalizer {
            defs: root.get("$defs").and_then(Value::as_object),
            problems: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Follows `$ref` and picks the non-null branch of `anyOf`/`oneOf` (how schemars renders
    /// `Option<Struct>`).
    fn resolve(&self, mut schema: &'a Value) -> &'a Value {
        for _ in 0..16 {
            if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
                let name = r.rsplit('/').next().unwrap_or(r);
                match self.defs.and_then(|d| d.get(name)) {
                    Some(s) => {
                        schema = s;
                        continue;
                    }
                    None => return schema,
                }
            }
            let branches = schema
                .get("anyOf")
                .or_else(|| schema.get("oneOf"))
                .and_then(Value::as_array);
            if let Some(bs) = branches {
                let non_null: Vec<&Value> = bs
                    .iter()
                    .filter(|b| b.get("type").and_then(Value::as_str) != Some("null"))
                    .collect();
                if non_null.len() == 1 {
                    schema = non_null[0];
                    continue;
                }
            }
            return schema;
        }
        schema
    }

    fn mismatch(&mut self, path: &str, schema: &Value, value: &Value, expected: &str) {
        let secret = schema.get("writeOnly") == Some(&Value::Bool(true));
        self.problems.push(Problem {
            field: display_path(path),
            value: if secret { None } else { Some(show(value)) },
            expected: format!("has the wrong type; expected {expected}"),
        });
    }

    /// Normalises `value` against `schema`; `None` means "drop this key".
    pub(super) fn normalize(
        &mut self,
        value: Value,
        schema: &'a Value,
        path: &str,
    ) -> Option<Value> {
        let schema = self.resolve(schema);
        if value.is_null() {
            return None;
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            return self.normalize_struct(value, schema, props, path);
        }
        let types = type_names(schema);
        if types.is_empty() {
            // `true` schema (serde_json::Value fields): accepted as written.
            return Some(value);
        }
        if types.contains(&"object") {
            return self.normalize_map(value, schema, path);
        }
        if types.contains(&"array") {
            return self.normalize_array(value, schema, path);
        }
        self.check_scalar(value, schema, &types, path)
    }

    /// An object with known keys: keys matched case-insensitively to their canonical spelling,
    /// unknown keys warned about and dropped, the same key twice (in different case) a problem.
    fn normalize_struct(
        &mut self,
        value: Value,
        schema: &'a Value,
        props: &'a Map<String, Value>,
        path: &str,
    ) -> Option<Value> {
        let Value::Object(obj) = value else {
            self.mismatch(path, schema, &value, "an object");
            return None;
        };
        let mut out = Map::new();
        let mut origin: Map<String, Value> = Map::new();
        for (key, v) in obj {
            let canonical = if props.contains_key(&key) {
                Some(key.clone())
            } else {
                props.keys().find(|k| k.eq_ignore_ascii_case(&key)).cloned()
            };
            let Some(canonical) = canonical else {
                self.warnings.push(unknown_key_warning(path, &key, props));
                continue;
            };
            let child_path = join(path, &canonical);
            if let Some(first) = origin.get(&canonical) {
                self.problems.push(Problem {
                    field: child_path.clone(),
                    value: None,
                    expected: format!(
                        "is given twice (as {first} and {}); keys are case-insensitive, expected one of them",
                        Value::String(key.clone())
                    ),
                });
                continue;
            }
            origin.insert(canonical.clone(), Value::String(key.clone()));
            if let Some(nv) = self.normalize(v, &props[&canonical], &child_path) {
                out.insert(canonical, nv);
            }
        }
        Some(Value::Object(out))
    }

    /// A map (labels, tags, ...): keys kept exactly as written, each value normalised.
    fn normalize_map(&mut self, value: Value, schema: &'a Value, path: &str) -> Option<Value> {
        let Value::Object(obj) = value else {
            self.mismatch(path, schema, &value, "an object (a map of names to values)");
            return None;
        };
        let item = schema
            .get("additionalProperties")
            .unwrap_or(&Value::Bool(true));
        let mut out = Map::new();
        for (key, v) in obj {
            let child = join_map(path, &key);
            if let Some(nv) = self.normalize(v, item, &child) {
                out.insert(key, nv);
            }
        }
        Some(Value::Object(out))
    }

    fn normalize_array(&mut self, value: Value, schema: &'a Value, path: &str) -> Option<Value> {
        let Value::Array(items) = value else {
            self.mismatch(path, schema, &value, "an array");
            return None;
        };
        let item = schema.get("items").unwrap_or(&Value::Bool(true));
        let out: Vec<Value> = items
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| self.normalize(v, item, &format!("{path}[{i}]")))
            .collect();
        Some(Value::Array(out))
    }

    /// A string, boolean or number of one of `types` (integers within their format's range).
    fn check_scalar(
        &mut self,
        value: Value,
        schema: &Value,
        types: &[&str],
        path: &str,
    ) -> Option<Value> {
        let ok = match &value {
            Value::String(_) => types.contains(&"string"),
            Value::Bool(_) => types.contains(&"boolean"),
            Value::Number(n) => {
                if types.contains(&"number") {
                    true
                } else if types.contains(&"integer") {
                    let (lo, hi) = int_range(schema);
                    let v = n
                        .as_i64()
                        .map(i128::from)
                        .or_else(|| n.as_u64().map(i128::from));
                    if v.is_some_and(|v| (lo..=hi).contains(&v)) {
                        true
                    } else {
                        self.mismatch(
                            path,
                            schema,
                            &value,
                            &format!("a whole number between {lo} and {hi}"),
                        );
                        return None;
                    }
                } else {
                    false
                }
            }
            _ => false,
        };
        if ok {
            return Some(value);
        }
        let expected = if types.contains(&"string") {
            "a string"
        } else if types.contains(&"boolean") {
            "true or false"
        } else if types.contains(&"integer") {
            "a whole number"
        } else {
            "a number"
        };
        self.mismatch(path, schema, &value, expected);
        None
    }
}

fn display_path(path: &str) -> String {
    if path.is_empty() {
        "(top level)".to_string()
    } else {
        path.to_string()
    }
}

/// "unknown key `azure.subscriptionid2` ignored; did you mean `azure.subscriptionId`?"
fn unknown_key_warning(path: &str, key: &str, known: &Map<String, Value>) -> String {
    let lower = key.to_ascii_lowercase();
    let best = known
        .keys()
        .map(|k| (strsim::jaro_winkler(&lower, &k.to_ascii_lowercase()), k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let full = join(path, key);
    match best {
        Some((_, k)) => format!(
            "unknown key `{full}` is ignored; did you mean `{}`?",
            join(path, k)
        ),
        None => {
            let mut names: Vec<&str> = known.keys().map(String::as_str).collect();
            names.sort_unstable();
            let at = if path.is_empty() {
                "the top level"
            } else {
                path
            };
            format!(
                "unknown key `{full}` is ignored; known keys in {at}: {}",
                names.join(", ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "outer": {"anyOf": [{"$ref": "#/$defs/Outer"}, {"type": "null"}]}
            },
            "$defs": {
                "Outer": {
                    "type": "object",
                    "properties": {
                        "maxPods": {"type": ["integer", "null"], "format": "int64"},
                        "small": {"type": ["integer", "null"], "format": "uint8"},
                        "secret": {"type": ["string", "null"], "writeOnly": true},
                        "labels": {"type": ["object", "null"], "additionalProperties": {"type": "string"}}
                    }
                }
            }
        })
    }

    fn run(v: Value) -> (Option<Value>, Normalizer<'static>) {
        let s: &'static Value = Box::leak(Box::new(schema()));
        let mut n = Normalizer::new(s);
        let out = n.normalize(v, s, "");
        (out, n)
    }

    #[test]
    fn struct_keys_are_canonicalised_map_keys_kept() {
        let (out, n) = run(json!({"OUTER": {"MAXPODS": 3, "labels": {"A.b/C": "x"}}}));
        assert_eq!(
            out,
            Some(json!({"outer": {"maxPods": 3, "labels": {"A.b/C": "x"}}}))
        );
        assert!(n.problems.is_empty() && n.warnings.is_empty());
    }

    #[test]
    fn unknown_keys_are_dropped_with_a_suggestion() {
        let (out, n) = run(json!({"outer": {"maxPod": 3}}));
        assert_eq!(out, Some(json!({"outer": {}})));
        assert_eq!(
            n.warnings,
            ["unknown key `outer.maxPod` is ignored; did you mean `outer.maxPods`?"]
        );
        let (_, n) = run(json!({"zzz": 1}));
        assert!(
            n.warnings[0].contains("known keys in the top level: outer"),
            "{:?}",
            n.warnings
        );
    }

    #[test]
    fn wrong_types_and_ranges_are_problems_and_secrets_are_redacted() {
        let (out, n) = run(json!({"outer": {"small": 300, "secret": 5, "labels": {"k": 1}}}));
        assert_eq!(out, Some(json!({"outer": {"labels": {}}})));
        let fields: Vec<_> = n.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            ["outer.small", "outer.secret", "outer.labels[\"k\"]"]
        );
        assert!(n.problems[0].expected.contains("between 0 and 255"));
        assert_eq!(n.problems[1].value, None);
    }

    #[test]
    fn nulls_mean_unset() {
        let (out, _) = run(json!({"outer": {"maxPods": null}}));
        assert_eq!(out, Some(json!({"outer": {}})));
    }
}
