//! Listings of runs and messages: a newest-first page of a table under filters, and the
//! partial indexes that the filters for the unusual (failed runs, messages that started
//! nothing) read.

use rusqlite::Connection;
use tripline_app::ports::{InboxQuery, Outcome, Page, RunQuery, StoreError};
use tripline_core::{RunStatus, Timestamp};

use crate::sql;

/// How many rows a search reads at a time.
const SEARCH_BATCH: usize = 256;

/// The statuses of a run on its usual course. Runs in any other status (waiting, or ended
/// otherwise than well) are what `runs_off_course` indexes by workflow and status: a
/// workflow's failed runs are read from it directly, not found by walking past its
/// succeeded ones (on a million-run store, a workflow that rarely fails would be read
/// whole). A run on the usual course never enters it, so ingest writes nothing more.
const USUAL_COURSE: [RunStatus; 3] = [RunStatus::Queued, RunStatus::Running, RunStatus::Succeeded];

/// The condition of `runs_off_course`. SQLite uses a partial index only for a query that
/// states its condition, so the index and the listing both take it from here.
static RUNS_OFF_COURSE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let usual: Vec<String> = USUAL_COURSE
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    format!("status NOT IN ({})", usual.join(", "))
});

/// The outcome of a message that started its run(s). Messages with any other outcome
/// (duplicates, rejections, filtered, missed) are indexed by outcome, with and without
/// their workflow, for the same reason; a started message never enters those indexes.
fn started() -> &'static str {
    Outcome::Started {
        run_ids: Vec::new(),
    }
    .kind()
}

static MESSAGES_NOT_STARTED: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("outcome <> '{}'", started()));

pub(crate) fn run_listing(q: &RunQuery) -> Listing {
    let mut l = Listing::default();
    l.eq("workflow", q.workflow.clone());
    l.eq("status", q.status.map(|s| s.as_str().to_string()));
    if q.workflow.is_some() && q.status.is_some_and(|s| !USUAL_COURSE.contains(&s)) {
        l.term(&RUNS_OFF_COURSE);
    }
    l.time_range("inserted_at", q.since, q.until);
    l
}

pub(crate) fn message_listing(q: &InboxQuery) -> Listing {
    let mut l = Listing::default();
    l.eq("workflow", q.workflow.clone());
    l.eq("trigger", q.trigger.clone());
    l.eq("outcome", q.outcome.clone());
    if q.outcome.as_deref().is_some_and(|o| o != started()) {
        l.term(&MESSAGES_NOT_STARTED);
    }
    l.time_range("received_at", q.since, q.until);
    l
}

/// The partial indexes over [`RUNS_OFF_COURSE`] and [`MESSAGES_NOT_STARTED`] (made at
/// open; on a store made before them, once: the runs' index took 1.07 s on a million-run
/// store).
pub(crate) fn partial_indexes() -> String {
    let (runs, messages) = (&*RUNS_OFF_COURSE, &*MESSAGES_NOT_STARTED);
    format!(
        "CREATE INDEX IF NOT EXISTS runs_off_course ON runs (workflow, status, id) WHERE {runs};
CREATE INDEX IF NOT EXISTS inbox_not_started ON inbox (workflow, outcome, id) WHERE {messages};
CREATE INDEX IF NOT EXISTS inbox_by_outcome ON inbox (outcome, id) WHERE {messages};"
    )
}

/// A newest-first, filtered page of a table whose ids sort by time (ULIDs); the cursor is
/// the last id of the previous page.
#[derive(Default)]
pub(crate) struct Listing {
    conditions: Vec<String>,
    args: Vec<rusqlite::types::Value>,
}

impl Listing {
    pub(crate) fn eq(&mut self, column: &str, value: Option<String>) {
        if let Some(v) = value {
            self.conditions.push(format!("{column} = ?"));
            self.args.push(v.into());
        }
    }

    /// The statement of a page: its arguments are [`Listing::args`], then the cursor and
    /// the number of rows.
    pub(crate) fn text(&self, select: &str) -> String {
        let mut conditions = self.conditions.clone();
        conditions.push("id < ?".into());
        format!(
            "{select} WHERE {} ORDER BY id DESC LIMIT ?",
            conditions.join(" AND ")
        )
    }

    /// A condition as SQL text (made by this module, never from a caller's value).
    pub(crate) fn term(&mut self, condition: &'static str) {
        self.conditions.push(condition.into());
    }

    pub(crate) fn time_range(
        &mut self,
        column: &str,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
    ) {
        if let Some(t) = since {
            self.conditions.push(format!("{column} >= ?"));
            self.args.push(t.millis().into());
        }
        if let Some(t) = until {
            self.conditions.push(format!("{column} < ?"));
            self.args.push(t.millis().into());
        }
    }

    /// A page newest first, below `cursor`. With `keep` (filters only the decoded record
    /// can apply: a search), rows are read in batches and filtered until the page is full
    /// or the range is exhausted: a search reads every record of its range, at worst.
    pub(crate) fn page<T>(
        self,
        conn: &Connection,
        select: &str,
        (limit, cursor): (usize, Option<String>),
        decode: impl Fn(&rusqlite::Row) -> Result<T, StoreError>,
        id_of: impl Fn(&T) -> String,
        keep: Option<impl Fn(&T) -> bool>,
    ) -> Result<Page<T>, StoreError> {
        let mut stmt = conn.prepare(&self.text(select)).map_err(sql)?;
        let batch = if keep.is_some() {
            SEARCH_BATCH
        } else {
            limit + 1
        };
        let mut below = cursor.unwrap_or_else(|| "~".into());
        let mut items = Vec::new();
        loop {
            let mut args = self.args.clone();
            args.push(below.clone().into());
            args.push((batch as i64).into());
            let mut rows = stmt.query(rusqlite::params_from_iter(args)).map_err(sql)?;
            let mut read = 0;
            while let Some(row) = rows.next().map_err(sql)? {
                read += 1;
                let item = decode(row)?;
                below = id_of(&item);
                if keep.as_ref().is_none_or(|k| k(&item)) {
                    items.push(item);
                    if items.len() > limit {
                        break;
                    }
                }
            }
            if items.len() > limit || read < batch || keep.is_none() {
                break;
            }
        }
        let next_cursor = (items.len() > limit).then(|| {
            items.truncate(limit);
            items.last().map(&id_of).unwrap_or_default()
        });
        Ok(Page { items, next_cursor })
    }
}

#[cfg(test)]
mod plan_tests {
    use super::*;
    use crate::EmbeddedStore;

    /// What SQLite plans for a listing's page, in one line.
    fn plan(conn: &Connection, l: &Listing, select: &str) -> String {
        let mut args = l.args.clone();
        args.push("~".to_string().into());
        args.push(51_i64.into());
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", l.text(select)))
            .expect("prepare");
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
            .expect("plan");
        rows.map(|r| r.expect("row")).collect::<Vec<_>>().join("; ")
    }

    /// A workflow's failed runs, and messages that started nothing, are read from the
    /// partial indexes (not found by walking past every succeeded run or started message);
    /// the usual statuses keep the indexes they had.
    #[tokio::test]
    async fn listings_of_the_unusual_read_the_partial_indexes() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = EmbeddedStore::open(dir.path()).expect("store");
        let runs = |workflow: Option<&str>, status| RunQuery {
            workflow: workflow.map(str::to_string),
            status: Some(status),
            ..RunQuery::default()
        };
        let inbox = |workflow: Option<&str>, outcome: &str| InboxQuery {
            workflow: workflow.map(str::to_string),
            outcome: Some(outcome.to_string()),
            ..InboxQuery::default()
        };
        let cases = [
            (
                run_listing(&runs(Some("w"), RunStatus::Failed)),
                "runs",
                "runs_off_course",
            ),
            (
                run_listing(&runs(Some("w"), RunStatus::Waiting)),
                "runs",
                "runs_off_course",
            ),
            (
                run_listing(&runs(None, RunStatus::Failed)),
                "runs",
                "runs_by_status",
            ),
            (
                run_listing(&runs(Some("w"), RunStatus::Succeeded)),
                "runs",
                "runs_by_",
            ),
            (
                message_listing(&inbox(Some("w"), "rejected")),
                "inbox",
                "inbox_not_started",
            ),
            (
                message_listing(&inbox(None, "duplicate")),
                "inbox",
                "inbox_by_outcome",
            ),
            (
                message_listing(&inbox(Some("w"), "started")),
                "inbox",
                "inbox_by_workflow",
            ),
        ];
        let plans = store
            .read(move |conn| {
                Ok(cases
                    .iter()
                    .map(|(l, table, want)| {
                        (plan(conn, l, &format!("SELECT id FROM {table}")), *want)
                    })
                    .collect::<Vec<_>>())
            })
            .await
            .expect("plans");
        for (plan, want) in plans {
            assert!(plan.contains(want), "expected {want} in the plan: {plan}");
        }
    }
}
