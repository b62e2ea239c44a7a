//! The drawings on a workflow's page, as shapes for the SVG templates: its steps in order
//! (nested for `map` and `parallel`), and the chains of workflows it is part of through
//! flow triggers and `trigger_workflow` steps.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use minijinja::{Value, context};
use tripline_core::definition::{Action, Step, Trigger};

use crate::ports::WorkflowRecord;

/// How many workflows a chain drawing shows at most, and how far it follows links.
const CHAIN_NODES: usize = 40;
const CHAIN_DEPTH: i32 = 4;

/// A box per step, top to bottom, indented under the `map` or `parallel` step it is in;
/// with the drawing's height.
pub(super) fn steps(list: &[Step]) -> (Vec<Value>, usize) {
    let mut boxes = Vec::new();
    walk(list, 0, "", &mut boxes);
    let height = boxes.len() * 34 + 4;
    (boxes, height)
}

fn walk(list: &[Step], depth: usize, lane: &str, out: &mut Vec<Value>) {
    for st in list {
        let kind = serde_json::to_value(&st.action)
            .ok()
            .and_then(|v| v["type"].as_str().map(str::to_string))
            .unwrap_or_else(|| "step".into());
        let mut label = format!("{lane}{} · {kind}", st.id);
        if let Some(w) = &st.when {
            label.push_str(&format!(" (when {w})"));
        }
        let y = out.len() * 34 + 2;
        out.push(context! { x => 4 + depth * 24, y => y, label => label, first => out.is_empty() });
        match &st.action {
            Action::Map(m) => walk(&m.steps, depth + 1, "each item: ", out),
            Action::Parallel(p) => {
                for b in &p.branches {
                    walk(&b.steps, depth + 1, &format!("{}: ", b.id), out);
                }
            }
            _ => {}
        }
    }
}

/// The workflows linked to `id` (either way, up to [`CHAIN_DEPTH`] links), each in a
/// column by how many links away it is, with lines for the links among them.
pub(super) fn chain(all: &[Arc<WorkflowRecord>], id: &str) -> Option<Value> {
    // from → to, for every link between deployed workflows.
    let mut links: BTreeSet<(String, String)> = BTreeSet::new();
    for rec in all {
        for t in &rec.definition.triggers {
            if let Trigger::Flow(f) = t {
                links.insert((f.workflow.clone(), rec.id.clone()));
            }
        }
        each_started(&rec.definition.steps, &mut |to| {
            links.insert((rec.id.clone(), to.to_string()));
        });
    }
    let mut place: BTreeMap<String, i32> = BTreeMap::from([(id.to_string(), 0)]);
    let mut todo = VecDeque::from([id.to_string()]);
    while let Some(w) = todo.pop_front() {
        let d = place[&w];
        for (from, to) in &links {
            let (next, nd) = if *from == w && d >= 0 {
                (to, d + 1)
            } else if *to == w && d <= 0 {
                (from, d - 1)
            } else {
                continue;
            };
            if nd.abs() <= CHAIN_DEPTH && place.len() < CHAIN_NODES && !place.contains_key(next) {
                place.insert(next.clone(), nd);
                todo.push_back(next.clone());
            }
        }
    }
    if place.len() < 2 {
        return None;
    }
    let low = *place.values().min()?;
    let mut rows: BTreeMap<i32, usize> = BTreeMap::new();
    let mut at: BTreeMap<&str, (i32, usize)> = BTreeMap::new();
    for (w, d) in &place {
        let row = rows.entry(*d).or_default();
        at.insert(w, ((d - low) * 180 + 4, *row * 40 + 4));
        *row += 1;
    }
    let nodes: Vec<Value> = at
        .iter()
        .map(|(w, (x, y))| context! { id => w, x => x, y => y, current => *w == id })
        .collect();
    let lines: Vec<Value> = links
        .iter()
        .filter_map(|(f, t)| Some((at.get(f.as_str())?, at.get(t.as_str())?)))
        .map(|((x1, y1), (x2, y2))| context! { x1 => x1 + 140, y1 => y1 + 13, x2 => x2, y2 => y2 + 13 })
        .collect();
    let width = (place.values().max()? - low + 1) * 180;
    let height = rows.values().max()? * 40 + 4;
    Some(context! { nodes => nodes, lines => lines, width => width, height => height })
}

/// The workflows `trigger_workflow` steps start, nested steps included.
fn each_started(list: &[Step], f: &mut impl FnMut(&str)) {
    for st in list {
        match &st.action {
            Action::TriggerWorkflow(t) => f(&t.workflow),
            Action::Map(m) => each_started(&m.steps, f),
            Action::Parallel(p) => p.branches.iter().for_each(|b| each_started(&b.steps, f)),
            _ => {}
        }
    }
}
