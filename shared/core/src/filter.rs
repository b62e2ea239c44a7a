//! Filters: a message matches when the filter is *contained* in it. Objects: every key of
//! the filter matches recursively; arrays: every element of the filter's array is contained
//! in some element of the message's array; scalars: equal.

use serde_json::Value;

/// Why a message does not match: the path in the message and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Mismatch {
    pub path: String,
    pub reason: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = if self.path.is_empty() {
            "the top"
        } else {
            &self.path
        };
        write!(f, "filter not met at `{at}`: {}", self.reason)
    }
}

pub fn contains(message: &Value, filter: &Value) -> bool {
    check(message, filter, "").is_ok()
}

/// Checks containment; on failure says where.
pub fn check(message: &Value, filter: &Value, path: &str) -> Result<(), Mismatch> {
    match (filter, message) {
        (Value::Object(f), Value::Object(m)) => {
            for (k, fv) in f {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match m.get(k) {
                    Some(mv) => check(mv, fv, &p)?,
                    None => {
                        return Err(Mismatch {
                            path: p,
                            reason: format!("expected {fv}, found nothing"),
                        });
                    }
                }
            }
            Ok(())
        }
        (Value::Array(f), Value::Array(m)) => {
            for (i, fv) in f.iter().enumerate() {
                if !m.iter().any(|mv| contains(mv, fv)) {
                    return Err(Mismatch {
                        path: path.to_string(),
                        reason: format!("no element contains filter element {i} ({fv})"),
                    });
                }
            }
            Ok(())
        }
        (f, m) if scalar_eq(f, m) => Ok(()),
        (f, m) => Err(Mismatch {
            path: path.to_string(),
            reason: format!("expected {f}, found {m}"),
        }),
    }
}

fn scalar_eq(f: &Value, m: &Value) -> bool {
    match (f, m) {
        // 1 and 1.0 are the same number to a person writing a filter.
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Object(_) | Value::Array(_), _) => false,
        _ => f == m,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn objects_match_on_the_filters_keys_only() {
        assert!(contains(
            &json!({"a": 1, "b": {"c": 2, "d": 3}}),
            &json!({"b": {"c": 2}})
        ));
        assert!(!contains(&json!({"a": 1}), &json!({"a": 2})));
    }

    #[test]
    fn arrays_match_when_each_filter_element_is_in_some_element() {
        let m = json!({"tags": [{"k": "x", "v": 1}, {"k": "y"}]});
        assert!(contains(&m, &json!({"tags": [{"k": "y"}, {"v": 1}]})));
        assert!(!contains(&m, &json!({"tags": [{"k": "z"}]})));
    }

    #[test]
    fn a_mismatch_names_its_path() {
        let e = check(
            &json!({"event": {"type": "push"}}),
            &json!({"event": {"type": "issue"}}),
            "",
        )
        .unwrap_err();
        assert_eq!(e.path, "event.type");
        assert!(
            e.to_string().contains("expected \"issue\", found \"push\""),
            "{e}"
        );
    }

    #[test]
    fn a_missing_key_is_a_mismatch() {
        let e = check(&json!({}), &json!({"a": 1}), "body").unwrap_err();
        assert_eq!(e.path, "body.a");
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-5i64..5).prop_map(Value::from),
            "[a-c]{0,2}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-d]", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A sub-document: drop some keys of objects, some elements of arrays, recursively.
    fn shrink(v: &Value, seed: u64) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .enumerate()
                    .filter(|(i, _)| (seed >> (i % 64)) & 1 == 0)
                    .map(|(i, (k, v))| (k.clone(), shrink(v, seed.rotate_left(i as u32 + 1))))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(
                a.iter()
                    .enumerate()
                    .filter(|(i, _)| (seed >> ((i + 7) % 64)) & 1 == 0)
                    .map(|(i, v)| shrink(v, seed.rotate_left(i as u32 + 3)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    proptest! {
        #[test]
        fn every_value_contains_itself(v in json_value()) {
            prop_assert!(contains(&v, &v));
        }

        #[test]
        fn every_value_contains_its_sub_documents(v in json_value(), seed in any::<u64>()) {
            prop_assert!(contains(&v, &shrink(&v, seed)));
        }

        #[test]
        fn containment_is_transitive(v in json_value(), s1 in any::<u64>(), s2 in any::<u64>()) {
            let a = shrink(&v, s1);
            let b = shrink(&a, s2);
            prop_assert!(contains(&v, &a) && contains(&a, &b));
            prop_assert!(contains(&v, &b));
        }

        #[test]
        fn the_empty_object_filter_matches_every_object(v in json_value()) {
            prop_assert_eq!(contains(&v, &json!({})), v.is_object());
        }

        #[test]
        fn a_differing_scalar_never_matches(a in -5i64..5, b in -5i64..5) {
            prop_assert_eq!(contains(&json!({"x": a}), &json!({"x": b})), a == b);
        }
    }
}
