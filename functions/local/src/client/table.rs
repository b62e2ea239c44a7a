//! Tables for people: columns as wide as their widest cell (at most 60 characters).

use serde_json::Value;

/// Prints `rows` of `items` under `headers`: each column's cells from `cell(item, column)`.
pub fn print(
    headers: &[&str],
    items: &[Value],
    cell: impl Fn(&Value, usize) -> String,
    empty: &str,
) {
    if items.is_empty() {
        println!("{empty}");
        return;
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| (0..headers.len()).map(|c| clip(&cell(i, c))).collect())
        .collect();
    let widths: Vec<usize> = (0..headers.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([headers[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

fn clip(s: &str) -> String {
    let one_line = s.replace(['\n', '\r'], " ");
    if one_line.chars().count() > 60 {
        format!("{}…", one_line.chars().take(59).collect::<String>())
    } else {
        one_line
    }
}

/// A JSON value as a cell: strings bare, null empty.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
