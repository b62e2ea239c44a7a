//! Reads a definition's text (YAML or JSON) into a JSON value, remembering where each value
//! and each mapping key stood so that every problem can be reported with its line and column.

use std::collections::HashMap;

use serde_json::{Map, Value};
use yaml_rust2::Yaml;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A line and column, both counted from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// Where each path of a document stood. Paths look like `steps[1].retry.max_attempts`.
#[derive(Clone, Debug, Default)]
pub struct Positions {
    values: HashMap<String, Position>,
    keys: HashMap<String, Position>,
}

impl Positions {
    /// The position of the value at `path`, or of the closest enclosing value that has one.
    pub fn of(&self, path: &str) -> Option<Position> {
        let mut p = path;
        loop {
            if let Some(pos) = self.values.get(p) {
                return Some(*pos);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
    /// The position of the mapping key that ends `path` (for unknown fields).
    pub fn of_key(&self, path: &str) -> Option<Position> {
        self.keys.get(path).copied().or_else(|| self.of(path))
    }
}

/// Text that could not be read at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    pub message: String,
    pub position: Option<Position>,
}

pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// Parses YAML (JSON is read by the same parser: it is a subset of YAML 1.2).
pub fn parse(text: &str) -> Result<(Value, Positions), SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, false).map_err(|e| SyntaxError {
        message: e.info().to_string(),
        position: Some(pos(*e.marker())),
    })?;
    if let Some(message) = builder.error {
        return Err(SyntaxError {
            message,
            position: builder.error_at,
        });
    }
    let value = builder.root.unwrap_or(Value::Null);
    Ok((value, builder.positions))
}

/// Parses JSON strictly (so JSON-only mistakes such as trailing commas are caught), then
/// takes positions from the YAML reading of the same text.
pub fn parse_json(text: &str) -> Result<(Value, Positions), SyntaxError> {
    let value: Value = serde_json::from_str(text).map_err(|e| SyntaxError {
        message: format!("invalid JSON: {e}"),
        position: Some(Position {
            line: e.line(),
            column: e.column(),
        }),
    })?;
    if depth(&value) > MAX_DEPTH {
        return Err(SyntaxError {
            message: format!("the definition nests deeper than {MAX_DEPTH} levels"),
            position: None,
        });
    }
    let positions = parse(text).map(|(_, p)| p).unwrap_or_default();
    Ok((value, positions))
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn pos(m: Marker) -> Position {
    Position {
        line: m.line(),
        column: m.col() + 1,
    }
}

enum Frame {
    Seq {
        path: String,
        items: Vec<Value>,
    },
    Map {
        path: String,
        map: Map<String, Value>,
        key: Option<String>,
    },
}

/// The most values a definition may hold once its YAML aliases are expanded: a few
/// hundred bytes of nested aliases ("billion laughs") would otherwise expand without bound.
pub const MAX_VALUES: usize = 100_000;

/// The deepest a definition may nest mappings and sequences.
pub const MAX_DEPTH: usize = 64;

/// How many values `v` holds, itself included.
fn count(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(count).sum::<usize>(),
        Value::Object(map) => 1 + map.values().map(count).sum::<usize>(),
        _ => 1,
    }
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Value>,
    positions: Positions,
    /// Each anchored value, with how many values it holds.
    anchors: HashMap<usize, (Value, usize)>,
    /// Values so far, aliases expanded.
    values: usize,
    error: Option<String>,
    error_at: Option<Position>,
    /// Anchor ids of collections being built.
    open_anchors: Vec<usize>,
}

impl Builder {
    /// The path of the value about to be produced in the current frame.
    fn next_path(&self) -> String {
        match self.stack.last() {
            None => String::new(),
            Some(Frame::Seq { path, items }) => index(path, items.len()),
            Some(Frame::Map {
                path, key: Some(k), ..
            }) => join(path, k),
            Some(Frame::Map { path, .. }) => path.clone(),
        }
    }

    /// False (and the error) when a new collection would nest past [`MAX_DEPTH`].
    fn nest(&mut self, mark: Marker) -> bool {
        if self.stack.len() >= MAX_DEPTH {
            self.fail(
                format!("the definition nests deeper than {MAX_DEPTH} levels"),
                mark,
            );
            return false;
        }
        true
    }

    fn expecting_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }

    fn fail(&mut self, message: String, at: Marker) {
        if self.error.is_none() {
            self.error = Some(message);
            self.error_at = Some(pos(at));
        }
    }

    /// Counts `n` more values; false (and the error) past [`MAX_VALUES`].
    fn grow(&mut self, n: usize, mark: Marker) -> bool {
        self.values = self.values.saturating_add(n);
        if self.values > MAX_VALUES {
            self.fail(
                format!("the definition holds more than {MAX_VALUES} values once its YAML aliases are expanded; write it out with fewer aliases (an alias of an alias multiplies)"),
                mark,
            );
            return false;
        }
        true
    }

    fn push_value(&mut self, v: Value, anchor: usize, mark: Marker) {
        if anchor > 0 {
            let n = count(&v);
            self.anchors.insert(anchor, (v.clone(), n));
        }
        match self.stack.last_mut() {
            None => self.root = Some(v),
            Some(Frame::Seq { items, .. }) => items.push(v),
            Some(Frame::Map { path, map, key }) => match key.take() {
                None => {
                    let k = match v {
                        Value::String(s) => s,
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Null => "null".into(),
                        _ => {
                            self.fail("a mapping key must be a plain value".into(), mark);
                            return;
                        }
                    };
                    let kp = join(path, &k);
                    if map.contains_key(&k) {
                        let msg = format!("the key `{k}` appears twice in the same mapping");
                        self.fail(msg, mark);
                        return;
                    }
                    self.positions.keys.insert(kp, pos(mark));
                    *key = Some(k);
                }
                Some(k) => {
                    map.insert(k, v);
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        match ev {
            Event::Scalar(s, style, anchor, _tag) => {
                if !self.grow(1, mark) {
                    return;
                }
                let v = if style == TScalarStyle::Plain {
                    scalar(&s)
                } else {
                    Value::String(s)
                };
                if !self.expecting_key() {
                    let p = self.next_path();
                    self.positions.values.insert(p, pos(mark));
                }
                self.push_value(v, anchor, mark);
            }
            Event::SequenceStart(anchor, _) => {
                if !self.grow(1, mark) || !self.nest(mark) {
                    return;
                }
                let path = self.next_path();
                self.positions.values.insert(path.clone(), pos(mark));
                self.open_anchors.push(anchor);
                self.stack.push(Frame::Seq {
                    path,
                    items: Vec::new(),
                });
            }
            Event::MappingStart(anchor, _) => {
                if self.expecting_key() {
                    self.fail("a mapping key must be a plain value".into(), mark);
                    return;
                }
                if !self.grow(1, mark) || !self.nest(mark) {
                    return;
                }
                let path = self.next_path();
                self.positions.values.insert(path.clone(), pos(mark));
                self.open_anchors.push(anchor);
                self.stack.push(Frame::Map {
                    path,
                    map: Map::new(),
                    key: None,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let anchor = self.open_anchors.pop().unwrap_or(0);
                let v = match self.stack.pop() {
                    Some(Frame::Seq { items, .. }) => Value::Array(items),
                    Some(Frame::Map { map, .. }) => Value::Object(map),
                    None => return,
                };
                self.push_value(v, anchor, mark);
            }
            Event::Alias(id) => {
                let Some(n) = self.anchors.get(&id).map(|(_, n)| *n) else {
                    return self.fail("an alias refers to an unknown anchor".into(), mark);
                };
                // Counted before it is copied: an expansion past the bound is never made.
                if !self.grow(n, mark) {
                    return;
                }
                if let Some((v, _)) = self.anchors.get(&id).cloned() {
                    self.push_value(v, 0, mark);
                }
            }
            _ => {}
        }
    }
}

/// YAML 1.2 core-schema resolution of a plain scalar.
fn scalar(s: &str) -> Value {
    match Yaml::from_str(s) {
        Yaml::Integer(i) => Value::from(i),
        Yaml::Real(r) => r
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| Value::String(s.to_string()), Value::Number),
        Yaml::Boolean(b) => Value::Bool(b),
        Yaml::Null => Value::Null,
        _ => Value::String(s.to_string()),
    }
}

#[cfg(test)]
mod bounds {
    use super::*;

    #[test]
    fn nested_aliases_are_refused_before_they_expand() {
        // "Billion laughs": each level doubles ten times; expanded it would be 10^9 values.
        let mut text =
            String::from("a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n");
        for (i, name) in ["b", "c", "d", "e", "f", "g", "h", "i"].iter().enumerate() {
            let prev = ["a", "b", "c", "d", "e", "f", "g", "h"][i];
            text.push_str(&format!("{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
        }
        assert!(text.len() < 1024);
        let started = std::time::Instant::now();
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("YAML aliases"), "{e:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // A few aliases are fine.
        assert!(parse("a: &a {x: 1}\nb: *a\nc: *a\n").is_ok());
    }

    #[test]
    fn deep_nesting_is_refused_in_yaml_and_json() {
        let yaml = "[".repeat(100) + &"]".repeat(100);
        assert!(parse(&yaml).unwrap_err().message.contains("deeper than"));
        let json = "[".repeat(100) + &"]".repeat(100);
        assert!(
            parse_json(&json)
                .unwrap_err()
                .message
                .contains("deeper than")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_becomes_json_with_positions_for_values_and_keys() {
        let text = "id: a\nsteps:\n  - id: one\n    n: 3\n    ok: true\n    none: ~\n";
        let (v, p) = parse(text).unwrap();
        assert_eq!(
            v,
            json!({"id": "a", "steps": [{"id": "one", "n": 3, "ok": true, "none": null}]})
        );
        assert_eq!(p.of("steps[0].n"), Some(Position { line: 4, column: 8 }));
        assert_eq!(
            p.of_key("steps[0].n"),
            Some(Position { line: 4, column: 5 })
        );
        assert_eq!(p.of("steps[0].missing").map(|p| p.line), Some(3));
    }

    #[test]
    fn quoted_scalars_stay_strings() {
        let (v, _) = parse("a: '3'\nb: \"true\"\n").unwrap();
        assert_eq!(v, json!({"a": "3", "b": "true"}));
    }

    #[test]
    fn a_duplicate_key_is_an_error_with_its_line() {
        let e = parse("a: 1\na: 2\n").unwrap_err();
        assert!(e.message.contains("twice"));
        assert_eq!(e.position.map(|p| p.line), Some(2));
    }

    #[test]
    fn bad_yaml_reports_where() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.position.is_some());
    }

    #[test]
    fn json_gets_positions_too() {
        let (v, p) = parse_json("{\n  \"id\": \"x\",\n  \"n\": 1\n}").unwrap();
        assert_eq!(v, json!({"id": "x", "n": 1}));
        assert_eq!(p.of("n").map(|p| p.line), Some(3));
        assert!(parse_json("{\"a\": 1,}").is_err());
    }
}
