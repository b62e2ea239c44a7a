//! tripline-embedded: the ports on SQLite. Records, the durable queue and its timers live in
//! one database file, so that accepting a message, recording its run and enqueueing it is a
//! single transaction: a crash loses nothing acknowledged.
//!
//! One writer thread commits in groups: every write waiting when a transaction starts joins
//! it, each in its own savepoint, and all are answered after the one commit (WAL,
//! `synchronous=FULL`: the commit is on disk when it returns). A write made while nothing
//! else is being written commits the same way on the caller's thread, without the hand-off.
//! Reads use a small pool of other connections.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use checkpoint::{Checkpoints, WAL_PAGES, note_wal};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Notify, oneshot};
use tripline_app::ports::*;

mod checkpoint;
mod fresh;
mod listing;
mod queue;
mod secrets;
mod store;
mod upkeep;
pub use queue::EmbeddedQueue;
pub use secrets::{EmbeddedSecrets, KEY_ENV, KEY_FILE, KeyError, SecretsKey};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS workflows (
    id TEXT NOT NULL,
    revision INTEGER NOT NULL,
    deployed_at INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (id, revision)
);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    status TEXT NOT NULL,
    version INTEGER NOT NULL,
    inserted_at INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_workflow ON runs (workflow, id);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, id);
CREATE TABLE IF NOT EXISTS inbox (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    trigger TEXT NOT NULL,
    outcome TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    record TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_by_workflow ON inbox (workflow, id);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    visible_at INTEGER NOT NULL,
    start_only INTEGER NOT NULL DEFAULT 0,
    if_version INTEGER
);
CREATE INDEX IF NOT EXISTS queue_by_visible ON queue (visible_at, seq);
CREATE TABLE IF NOT EXISTS markers (
    name TEXT PRIMARY KEY,
    at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS links (
    name TEXT PRIMARY KEY,
    target TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS states (
    workflow TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS slots (
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS secrets (
    name TEXT PRIMARY KEY,
    nonce BLOB NOT NULL,
    value BLOB NOT NULL,
    set_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id TEXT PRIMARY KEY,
    at INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS contexts (
    workflow TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (workflow, key)
);
"#;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the data folder {path}: {source}")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "another tripline process is using the data folder {0}; stop it, or pass another --data folder"
    )]
    Locked(PathBuf),
    #[error("cannot open the database {path}: {source}")]
    Database {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

fn corrupt(what: &str, e: serde_json::Error) -> StoreError {
    StoreError::Unavailable(format!("a stored {what} cannot be read: {e}").into())
}

/// A write job: runs inside the group transaction and returns whether it succeeded (to keep
/// or roll back its savepoint) and what to do once the commit's outcome is known. Given
/// no connection (its transaction or savepoint could not be opened), it writes nothing and
/// only hands back its finisher, which is then told the failure.
type Finisher = Box<dyn FnOnce(Result<(), String>) + Send>;
type Job = Box<dyn FnOnce(Option<&Connection>) -> (bool, Finisher) + Send>;

/// Tests make the next savepoint fail, as a full disk or an I/O error would.
#[cfg(test)]
pub(crate) static FAIL_NEXT_SAVEPOINT: AtomicBool = AtomicBool::new(false);

struct Shared {
    writer: Mutex<mpsc::Sender<Job>>,
    /// The write connection: the writer thread's, or the caller's when nothing else is
    /// being written (see [`EmbeddedStore::write`]).
    conn: Arc<Mutex<Connection>>,
    /// Write jobs sent to the writer thread and not yet answered.
    pending: Arc<AtomicUsize>,
    /// Set when a write on a caller's thread left the writer's part of a checkpoint due.
    checkpoint_due: Arc<AtomicBool>,
    checkpoints: Arc<Checkpoints>,
    readers: Mutex<Vec<Connection>>,
    path: PathBuf,
    /// Told after a commit that made queue items receivable.
    pub(crate) queue_ready: Notify,
    /// Runs just admitted, for their first read (`fresh.rs`).
    pub(crate) fresh: fresh::Fresh,
    _lock: File,
}

/// The embedded store. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedStore {
    shared: Arc<Shared>,
}

fn open_conn(path: &Path, read_only: bool) -> Result<Connection, rusqlite::Error> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // Room for every statement the writer runs (rusqlite keeps 16 by default): a statement
    // pushed out is parsed again at its next use.
    conn.set_prepared_statement_cache_capacity(64);
    if !read_only {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // No automatic checkpoint: see `checkpoint.rs`.
        conn.wal_hook(Some(note_wal));
        // Every commit is on disk before it is acknowledged.
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Room for a whole group transaction: large groups must not spill dirty pages to
        // the WAL before the commit (they would be written twice), so spilling waits for
        // 8,192 pages. The cache itself stays SQLite's default: every commit walks the page
        // cache's hash table, and a 32 MB cache made that 7% of the CPU under load (perf).
        conn.pragma_update(None, "cache_spill", 8192)?;
        // Each write job runs in a savepoint, whose sub-journal would otherwise be a temp
        // file written with a syscall per page.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
    }
    Ok(conn)
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `dir`, and locks it for this process.
    /// The folder and its files are made owner-only: they hold every run's data.
    pub fn open(dir: &Path) -> Result<Self, OpenError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::create_dir_all(dir).map_err(|source| OpenError::Folder {
            path: dir.to_path_buf(),
            source,
        })?;
        secrets::owner_only(dir, 0o700);
        let lock_path = dir.join("tripline.lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|source| OpenError::Folder {
                path: dir.to_path_buf(),
                source,
            })?;
        if lock.try_lock().is_err() {
            return Err(OpenError::Locked(dir.to_path_buf()));
        }
        let path = dir.join("tripline.db");
        // Created owner-only before SQLite opens it: SQLite gives its `-wal` and `-shm`
        // files the database file's permissions.
        let _ = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path);
        for f in [
            "tripline.db",
            "tripline.db-wal",
            "tripline.db-shm",
            "tripline.lock",
        ] {
            secrets::owner_only(&dir.join(f), 0o600);
        }
        let db_err = |source| OpenError::Database {
            path: path.clone(),
            source,
        };
        let writer = open_conn(&path, false).map_err(db_err)?;
        writer.execute_batch(SCHEMA).map_err(db_err)?;
        writer
            .execute_batch(&listing::partial_indexes())
            .map_err(db_err)?;
        // Data folders made before work items had `start_only`.
        if writer
            .prepare("SELECT start_only FROM queue LIMIT 0")
            .is_err()
        {
            writer
                .execute_batch("ALTER TABLE queue ADD COLUMN start_only INTEGER NOT NULL DEFAULT 0")
                .map_err(db_err)?;
        }
        // And before they had `if_version`.
        if writer
            .prepare("SELECT if_version FROM queue LIMIT 0")
            .is_err()
        {
            writer
                .execute_batch("ALTER TABLE queue ADD COLUMN if_version INTEGER")
                .map_err(db_err)?;
        }
        let mut readers = Vec::new();
        for _ in 0..4 {
            readers.push(open_conn(&path, true).map_err(db_err)?);
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let conn = Arc::new(Mutex::new(writer));
        let pending = Arc::new(AtomicUsize::new(0));
        let checkpoint_due = Arc::new(AtomicBool::new(false));
        let checkpoints = Arc::new(Checkpoints::start(&path).map_err(db_err)?);
        let (thread_conn, thread_pending, due, passes) = (
            conn.clone(),
            pending.clone(),
            checkpoint_due.clone(),
            checkpoints.clone(),
        );
        std::thread::Builder::new()
            .name("tripline-writer".into())
            .spawn(move || write_loop(&thread_conn, &thread_pending, (&due, &passes), rx))
            .map_err(|source| OpenError::Folder {
                path: dir.to_path_buf(),
                source,
            })?;
        Ok(Self {
            shared: Arc::new(Shared {
                writer: Mutex::new(tx),
                conn,
                pending,
                checkpoint_due,
                checkpoints,
                readers: Mutex::new(readers),
                path,
                queue_ready: Notify::new(),
                fresh: fresh::Fresh::default(),
                _lock: lock,
            }),
        })
    }

    /// Runs `f` in the next group transaction; resolves after the commit.
    async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.write_at(f, true).await
    }

    /// Runs `f` in the next group transaction on the writer thread, never on the caller's:
    /// for a long write (retention's deletions), which on the caller's thread would hold
    /// up every request on that async worker.
    async fn write_long<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.write_at(f, false).await
    }

    async fn write_at<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
        here_ok: bool,
    ) -> Result<R, StoreError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = match conn {
                Some(conn) => f(conn),
                None => Err(StoreError::Unavailable(
                    "the write could not be started (its transaction or savepoint failed)".into(),
                )),
            };
            let ok = result.is_ok();
            let finish: Finisher = Box::new(move |commit| {
                let _ = tx.send(match commit {
                    Ok(()) => result,
                    Err(e) => Err(StoreError::Unavailable(
                        format!("commit failed: {e}").into(),
                    )),
                });
            });
            (ok, finish)
        });
        let job = if here_ok {
            self.write_here(job)
        } else {
            Some(job)
        };
        if let Some(job) = job {
            self.to_writer(job)?;
        }
        rx.await
            .map_err(|_| StoreError::Unavailable("the write was not answered".into()))?
    }

    /// Hands `job` to the writer thread.
    fn to_writer(&self, job: Job) -> Result<(), StoreError> {
        let writer = self
            .shared
            .writer
            .lock()
            .map_err(|_| StoreError::Unavailable("the writer is gone".into()))?;
        self.shared.pending.fetch_add(1, SeqCst);
        writer.send(job).map_err(|_| {
            self.shared.pending.fetch_sub(1, SeqCst);
            StoreError::Unavailable("the writer thread stopped".into())
        })
    }

    /// When nothing else is being written (one request at a time), commits `job` on this
    /// thread, saving the two thread wake-ups of a hand-off to the writer thread and back
    /// (about a tenth of a sync reply's time); otherwise gives it back, for the writer
    /// thread, which groups the jobs waiting under one commit.
    fn write_here(&self, job: Job) -> Option<Job> {
        if self.shared.pending.load(SeqCst) != 0 {
            return Some(job);
        }
        let Ok(conn) = self.shared.conn.try_lock() else {
            return Some(job);
        };
        run_group(&conn, vec![job]);
        drop(conn);
        if self.shared.checkpoints.after_commit(WAL_PAGES.take()) {
            // The writer's part of a checkpoint is due: the writer thread does it, woken
            // by an empty job, off this (async) thread.
            self.shared.checkpoint_due.store(true, SeqCst);
            let wake: Job = Box::new(|_| (true, Box::new(|_| ())));
            let _ = self.to_writer(wake);
        }
        None
    }

    /// Runs `f` on a pooled read connection.
    async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = shared.readers.lock().ok().and_then(|mut p| p.pop());
            let conn = match pooled {
                Some(c) => c,
                None => open_conn(&shared.path, true).map_err(unavailable)?,
            };
            let r = f(&conn);
            if let Ok(mut p) = shared.readers.lock() {
                p.push(conn);
            }
            r
        })
        .await
        .map_err(unavailable)?
    }

    /// Runs a short read (a point lookup by key) on the calling thread: in WAL mode a read
    /// never waits for the writer, and it takes microseconds, less than a hop to the
    /// blocking pool. Listings, which may scan, use [`Self::read`].
    pub(crate) fn read_now<R>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let pooled = self.shared.readers.lock().ok().and_then(|mut p| p.pop());
        let conn = match pooled {
            Some(c) => c,
            None => open_conn(&self.shared.path, true).map_err(unavailable)?,
        };
        let r = f(&conn);
        if let Ok(mut p) = self.shared.readers.lock() {
            p.push(conn);
        }
        r
    }

    pub(crate) fn notify_queue(&self) {
        self.shared.queue_ready.notify_waiters();
    }
}

/// The most write jobs one commit takes: enough to share an fsync widely, few enough that a
/// request does not wait long behind a group.
const MAX_GROUP: usize = 128;

fn write_loop(
    conn: &Mutex<Connection>,
    pending: &AtomicUsize,
    (checkpoint_due, checkpoints): (&AtomicBool, &Checkpoints),
    rx: mpsc::Receiver<Job>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let jobs = batch.len();
        let conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        run_group(&conn, batch);
        if checkpoints.after_commit(WAL_PAGES.take()) || checkpoint_due.swap(false, SeqCst) {
            checkpoint::checkpoint(&conn);
        }
        drop(conn);
        pending.fetch_sub(jobs, SeqCst);
    }
}

/// Runs `batch` in one transaction, each job in its own savepoint, and answers every job
/// after the commit.
fn run_group(conn: &Connection, batch: Vec<Job>) {
    let mut finishers = Vec::with_capacity(batch.len());
    let begun = exec_cached(conn, "BEGIN IMMEDIATE");
    if let Err(e) = begun {
        // Nothing runs outside a transaction: each job is told, and writes nothing.
        for job in batch {
            let (_, finish) = job(None);
            finish(Err(e.to_string()));
        }
        return;
    }
    for job in batch {
        let sp = savepoint(conn);
        if let Err(e) = sp {
            // Without its savepoint a job's writes could not be undone on failure: it
            // does not run, and the others commit without it.
            tracing::error!(error = %e, "a write's savepoint failed; the write is refused");
            let (_, finish) = job(None);
            finish(Err(e.to_string()));
            continue;
        }
        let (ok, finish) = job(Some(conn));
        let ended = if ok {
            exec_cached(conn, "RELEASE job")
        } else {
            exec_cached(conn, "ROLLBACK TO job").and_then(|_| exec_cached(conn, "RELEASE job"))
        };
        match ended {
            Ok(_) => finishers.push(finish),
            Err(e) => {
                // The job's outcome is unknown inside this transaction: roll all of it
                // back, so what callers are told matches the disk.
                tracing::error!(error = %e, "ending a savepoint failed; the group is rolled back");
                let _ = conn.execute_batch("ROLLBACK");
                finish(Err(e.to_string()));
                for f in finishers.drain(..) {
                    f(Err(format!("rolled back: {e}")));
                }
                break;
            }
        }
    }
    if conn.is_autocommit() {
        // Rolled back above: nothing to commit.
        return;
    }
    let committed = exec_cached(conn, "COMMIT").map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        e.to_string()
    });
    for f in finishers {
        f(committed.clone().map(|_| ()));
    }
}

fn savepoint(conn: &Connection) -> rusqlite::Result<()> {
    #[cfg(test)]
    if FAIL_NEXT_SAVEPOINT.swap(false, SeqCst) {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
            Some("injected".into()),
        ));
    }
    exec_cached(conn, "SAVEPOINT job").map(|_| ())
}

fn exec_cached(conn: &Connection, statement: &str) -> rusqlite::Result<usize> {
    conn.prepare_cached(statement)?.execute([])
}

fn sql(e: rusqlite::Error) -> StoreError {
    unavailable(e)
}

#[cfg(test)]
mod writer_tests {
    use super::*;

    /// A job that fails after writing is rolled back to its savepoint; the jobs grouped
    /// with it commit. The connection is held while the 40 writes are sent, so that they
    /// all wait for the writer thread and share its transactions.
    #[tokio::test]
    // Held on purpose: the writes must queue for the writer thread (another OS thread).
    #[allow(clippy::await_holding_lock)]
    async fn a_write_that_fails_midway_leaves_nothing_and_its_group_commits() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = EmbeddedStore::open(dir.path()).expect("store");
        let threads = Arc::new(Mutex::new(Vec::new()));
        let held = store.shared.conn.lock().expect("connection");
        let writes: Vec<_> = (0..40)
            .map(|i| {
                let (store, threads) = (store.clone(), threads.clone());
                tokio::spawn(async move {
                    store
                        .write(move |conn| {
                            let name = std::thread::current().name().map(str::to_string);
                            threads.lock().expect("names").push(name);
                            conn.execute(
                                "INSERT INTO markers (name, at) VALUES (?1, ?2)",
                                rusqlite::params![format!("m{i}"), i],
                            )
                            .map_err(sql)?;
                            if i % 2 == 1 {
                                return Err(StoreError::Conflict);
                            }
                            Ok(())
                        })
                        .await
                })
            })
            .collect();
        while store.shared.pending.load(SeqCst) < 40 {
            tokio::task::yield_now().await;
        }
        drop(held);
        for (i, w) in writes.into_iter().enumerate() {
            let r = w.await.expect("task");
            assert_eq!(r.is_ok(), i % 2 == 0, "write {i}: {r:?}");
            let at = tripline_core::Timestamp::from_millis(i as i64);
            let found = store.marker(&format!("m{i}")).await.expect("read");
            assert_eq!(found, (i % 2 == 0).then_some(at), "marker {i}");
        }
        let names = threads.lock().expect("names").clone();
        assert_eq!(names.len(), 40);
        assert!(
            names
                .iter()
                .all(|n| n.as_deref() == Some("tripline-writer")),
            "{names:?}"
        );
    }

    /// With nothing else being written, a write is committed on the caller's thread (no
    /// hand-off to the writer thread and back), durably: a new store on the folder reads it.
    #[tokio::test]
    async fn a_write_with_nothing_else_pending_commits_on_the_callers_thread() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = EmbeddedStore::open(dir.path()).expect("store");
        let ran_on = store
            .write(|conn| {
                conn.execute("INSERT INTO markers (name, at) VALUES ('here', 7)", [])
                    .map_err(sql)?;
                Ok(std::thread::current().name().map(str::to_string))
            })
            .await
            .expect("write");
        assert_ne!(ran_on.as_deref(), Some("tripline-writer"));
        let at = tripline_core::Timestamp::from_millis(7);
        assert_eq!(store.marker("here").await.expect("read"), Some(at));
        drop(store);
        let again = EmbeddedStore::open(dir.path()).expect("reopened");
        assert_eq!(again.marker("here").await.expect("read"), Some(at));
    }

    /// A long write (retention's deletions, 500 records a batch) goes to the writer thread
    /// even when nothing else is being written: on the caller's thread it would hold up
    /// every request on that async worker.
    #[tokio::test]
    async fn a_long_write_runs_on_the_writer_thread_even_alone() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = EmbeddedStore::open(dir.path()).expect("store");
        let ran_on = store
            .write_long(|_| Ok(std::thread::current().name().map(str::to_string)))
            .await
            .expect("write");
        assert_eq!(ran_on.as_deref(), Some("tripline-writer"));
    }

    /// Checkpoints run on the checkpoint thread, and the writer's part on the writer
    /// thread, never on the caller's (an async worker, where SQLite's automatic one would
    /// run); and the log does not grow past about a checkpoint's worth of pages, though a
    /// pass made while writes go on never copies all of it.
    #[tokio::test]
    async fn checkpoints_run_off_the_callers_thread_and_bound_the_log() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = EmbeddedStore::open(dir.path()).expect("store");
        // About 4,000 pages in all: each write is a 16 KB row (four pages and more).
        for i in 0..1000 {
            store
                .write(move |conn| {
                    conn.execute_batch("CREATE TABLE IF NOT EXISTS blobs (b BLOB)")
                        .map_err(sql)?;
                    conn.execute("INSERT INTO blobs (b) VALUES (zeroblob(16000 + ?1))", [i])
                        .map_err(sql)?;
                    Ok(())
                })
                .await
                .expect("write");
        }
        let names = checkpoint::CHECKPOINTED_ON.lock().expect("names").clone();
        let on = |name: &str| names.iter().filter(|n| n.as_deref() == Some(name)).count();
        assert!(on("tripline-checkpoint") > 0, "{names:?}");
        assert!(on("tripline-writer") > 0, "{names:?}");
        assert_eq!(
            on("tripline-checkpoint") + on("tripline-writer"),
            names.len(),
            "{names:?}"
        );
        let wal = std::fs::metadata(dir.path().join("tripline.db-wal")).expect("wal");
        assert!(
            wal.len() < 2000 * 4096,
            "the log grew to {} bytes",
            wal.len()
        );
    }

    #[tokio::test]
    async fn a_write_whose_savepoint_fails_writes_nothing_and_says_so() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = EmbeddedStore::open(dir.path()).expect("store");
        FAIL_NEXT_SAVEPOINT.store(true, SeqCst);
        let at = tripline_core::Timestamp::from_millis(5);
        assert!(store.set_marker("m", at).await.is_err());
        assert_eq!(
            store.marker("m").await.expect("read"),
            None,
            "nothing landed"
        );
        store
            .set_marker("m", at)
            .await
            .expect("the next write works");
        assert_eq!(store.marker("m").await.expect("read"), Some(at));
    }
}
