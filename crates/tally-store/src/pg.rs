//! [`PgBackend`]: the log's key space in PostgreSQL (`migrations/`), so that [`crate::Log`]
//! and every invariant built on it hold unchanged: the same keys, the same v1 envelopes, one
//! transaction per [`Backend::apply`].
//!
//! What PostgreSQL adds, inside that same transaction:
//! - **The counter and the fence.** The one row of `tally_log_head` holds the writer's `term`
//!   and the head (`last_pos`). Every write updates it `WHERE term = <ours> AND last_pos =
//!   <the head this process last committed>`: the row lock serialises writers, so positions are
//!   dense and in commit order even with two processes appending, and a process that lost the
//!   right to write (a newer one took the next term at start-up, or appended first) matches no
//!   row, rolls back and is told [`StoreError::Fenced`]; it never commits again.
//! - **Usage events in Cloud Controller's columns** (`tally_usage_events`, the view
//!   `app_usage_events`), mirrored from the usage blocks the transaction writes or removes.
//! - **Unknown outcomes resolved.** If the connection drops or a timeout hits around `COMMIT`,
//!   the head row is read again on a new connection: it says whether the transaction landed
//!   (the meta it wrote is the head), so a caller is never told "failed" for a write that is in
//!   the log, nor "done" for one that is not.

use std::ops::ControlFlow;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use r2d2_postgres::postgres::fallible_iterator::FallibleIterator;
use r2d2_postgres::postgres::types::Type;
use r2d2_postgres::postgres::{self as postgres_error, Client, Config, NoTls, Transaction};
use r2d2_postgres::PostgresConnectionManager;
use tally_domain::{Seq, UsageEvent};

use crate::backend::{Backend, Op, Ranged, Visitor};
use crate::codec::{decode_block, decode_meta, visit_usage_block};
use crate::keys::{META, USAGE};
use crate::{StoreError, UsageSlot};

mod migrations {
    refinery::embed_migrations!("migrations");
}

/// The advisory lock under which migrations run (one process migrates, the others wait).
const MIGRATION_LOCK: i64 = 0x7461_6c6c_795f_6d31; // "tally_m1"

/// Rows a ranged read fetches per round trip, at the most.
const SCAN_CHUNK: i64 = 512;
/// Rows the first round trip of an ascending read fetches (a descending one fetches one).
const SCAN_FIRST_CHUNK: i64 = 8;

/// How to reach the database.
#[derive(Clone)]
pub struct PgOptions {
    /// A libpq connection string or URL (`postgresql://user@host:port/db`; several hosts and
    /// `target_session_attrs=read-write` follow a failover).
    pub url: String,
    /// Connections in the pool (the writer takes one per commit; readers the rest).
    pub pool_size: u32,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How long one statement may run (`statement_timeout` of every connection).
    pub statement_timeout: Duration,
    /// Who this process is, recorded as the head row's `holder`: the same on every start of
    /// one node (a restarted node takes its own lease back at once).
    pub holder: String,
    /// Where this process takes forwarded writes, recorded as the head row's `holder_url`.
    pub advertise_url: String,
    /// How long the lease lasts without a renewal: how long the other nodes wait before one
    /// of them takes over from a writer that stopped.
    pub lease: Duration,
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &redacted(&self.url))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("holder", &self.holder)
            .field("advertise_url", &self.advertise_url)
            .field("lease", &self.lease)
            .finish()
    }
}

/// A connection string with any password replaced by `***` (URL or key=value form).
pub fn redacted(url: &str) -> String {
    if let Some(rest) = url
        .strip_prefix("postgresql://")
        .or_else(|| url.strip_prefix("postgres://"))
    {
        let scheme = &url[..url.len() - rest.len()];
        let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        let authority = match authority.rfind('@') {
            Some(at) => {
                let (userinfo, hosts) = authority.split_at(at);
                match userinfo.split_once(':') {
                    Some((user, _)) => format!("{user}:***{hosts}"),
                    None => authority.to_owned(),
                }
            }
            None => authority.to_owned(),
        };
        let tail = tail
            .split('&')
            .map(|part| match part.split_once("password=") {
                Some((before, _)) if before.is_empty() || before.ends_with('?') => {
                    format!("{before}password=***")
                }
                _ => part.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&");
        return format!("{scheme}{authority}{tail}");
    }
    url.split_whitespace()
        .map(|part| match part.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => "password=***".to_owned(),
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn db_error(error: impl std::fmt::Display) -> StoreError {
    StoreError::Io(format!("PostgreSQL: {error}"))
}

/// What this process knows of the head row.
#[derive(Debug, Clone, Copy)]
struct Head {
    /// The term it appends under; 0 when it holds no lease (it follows, and writes nothing).
    term: i64,
    /// Until when its lease is surely its own (the last renewal's send time, plus the lease,
    /// less [`LEASE_MARGIN`]).
    trusted_until: Option<Instant>,
    /// The head it last committed (or found at start-up).
    last_pos: i64,
    /// A COMMIT's outcome is not known yet (PostgreSQL did not answer since): every write is
    /// refused until [`Backend::refresh`] has read the head row again, because the head this
    /// process believes in may be behind the database's.
    unresolved: bool,
}

/// How long a write whose COMMIT went unanswered keeps asking the head row for its outcome.
const RESOLVE_FOR: Duration = Duration::from_secs(5);

/// How much sooner than its lease runs out a writer stops trusting it (clock rates, the
/// renewal's own round trip): River's safety margin.
const LEASE_MARGIN: Duration = Duration::from_millis(500);

/// The channel a writer notifies in every append transaction (payload: the new head).
const CHANNEL: &str = "tally_log";

type Pooled = r2d2::PooledConnection<PostgresConnectionManager<NoTls>>;

/// The writer's connection: no pool checkout and no statement parsed per commit.
struct Writer {
    client: Client,
    statements: Statements,
}

/// The statements of a write, prepared once per connection.
struct Statements {
    /// A whole group commit in one statement (the fence, the blocks, the usage rows).
    append: postgres_error::Statement,
    fence_head: postgres_error::Statement,
    fence_term: postgres_error::Statement,
    put: postgres_error::Statement,
    delete: postgres_error::Statement,
    clear_usage: postgres_error::Statement,
}

impl Writer {
    fn connect(config: &Config) -> Result<Self, postgres_error::Error> {
        let mut client = config.connect(NoTls)?;
        let statements = Statements {
            // The common group commit, one round trip between BEGIN and COMMIT: the head row
            // (counter, fence, lease, wake-up), the blocks and the usage rows, the last two
            // written only if the first matched.
            append: client.prepare(&format!(
                "WITH head AS (UPDATE tally_log_head SET last_pos = $1, epoch = $2, \
                 usage_floor = $3, updated_at = now(), \
                 expires_at = now() + $6::float8 * interval '1 second' \
                 WHERE term = $4 AND last_pos = $5 RETURNING last_pos), \
                 kv AS (INSERT INTO tally_kv (key, value) \
                 SELECT k, v FROM unnest($7::bytea[], $8::bytea[]) AS t(k, v) \
                 WHERE EXISTS (SELECT 1 FROM head) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value), \
                 usage AS (INSERT INTO tally_usage_events ({USAGE_COLUMNS}) \
                 SELECT * FROM unnest($9::int8[], $10::text[], $11::timestamptz[], $12::text[], \
                 $13::text[], $14::int8[], $15::int8[], $16::int8[], $17::int8[], $18::text[], \
                 $19::text[], $20::text[], $21::text[], $22::text[], $23::text[], $24::text[], \
                 $25::text[], $26::text[], $27::text[], $28::text[], $29::text[], $30::text[], \
                 $31::text[]) WHERE EXISTS (SELECT 1 FROM head)) \
                 SELECT pg_notify('{CHANNEL}', last_pos::text) FROM head"
            ))?,
            // The append's counter, fence, lease renewal and wake-up in one statement: one
            // row when the term and the head are still this writer's, none otherwise.
            fence_head: client.prepare(&format!(
                "WITH head AS (UPDATE tally_log_head SET last_pos = $1, epoch = $2, \
                 usage_floor = $3, updated_at = now(), \
                 expires_at = now() + $6::float8 * interval '1 second' \
                 WHERE term = $4 AND last_pos = $5 RETURNING last_pos) \
                 SELECT pg_notify('{CHANNEL}', last_pos::text) FROM head"
            ))?,
            fence_term: client.prepare(
                "UPDATE tally_log_head SET updated_at = now(), \
                 expires_at = now() + $2::float8 * interval '1 second' WHERE term = $1",
            )?,
            put: client.prepare(
                "INSERT INTO tally_kv (key, value) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            )?,
            delete: client.prepare("DELETE FROM tally_kv WHERE key = ANY($1)")?,
            clear_usage: client
                .prepare("DELETE FROM tally_usage_events WHERE seq BETWEEN $1 AND $2")?,
        };
        Ok(Self { client, statements })
    }
}

/// The log's key space in PostgreSQL.
pub struct PgBackend {
    /// `None` only while it is dropped.
    pool: Option<r2d2::Pool<PostgresConnectionManager<NoTls>>>,
    /// How to connect (the writer's own connection).
    config: Config,
    /// The connection writes go through, with its prepared statements: made on the first
    /// write, dropped after any failure and made again on the next.
    writer: Mutex<Option<Writer>>,
    head: Mutex<Head>,
    /// Who this process is and where it takes writes (the head row's `holder`, `holder_url`).
    holder: String,
    advertise_url: String,
    lease: Duration,
    /// Set when dropped: the LISTEN thread ([`Backend::watch`]) ends.
    closed: Arc<AtomicBool>,
    /// Connections made again after one failed (the writer's, the LISTEN one).
    reconnects: Arc<std::sync::atomic::AtomicU64>,
    /// Whether the writer's connection was lost since it was last made.
    writer_lost: AtomicBool,
    /// A REPEATABLE READ transaction the reads of one thread go through ([`Backend::pin`]).
    pinned: Mutex<Option<(std::thread::ThreadId, Pooled)>>,
    /// A read-only snapshot (`open_snapshot`): every read goes through this one connection's
    /// REPEATABLE READ transaction; writes are refused.
    snapshot: Option<Mutex<Pooled>>,
    /// Where it is, without a password, for messages.
    name: String,
}

impl std::fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBackend")
            .field("database", &self.name)
            .finish_non_exhaustive()
    }
}

impl PgBackend {
    /// Connects, applies the migrations (under a lock), and takes the next term if the lease
    /// is free or was this node's own (`holder`: a restarted node takes its lease back at once,
    /// and its earlier process, if it still runs, is fenced from now on). Otherwise it opens
    /// as a follower: it reads, and appends nothing until [`Backend::lead`] gives it the lease.
    pub fn open(options: &PgOptions) -> Result<Self, StoreError> {
        apart(|| Self::open_here(options))
    }

    fn open_here(options: &PgOptions) -> Result<Self, StoreError> {
        let (pool, config, name) = connect(options)?;
        let mut client = pool.get().map_err(db_error)?;
        migrate(&mut client)?;
        let sent = Instant::now();
        let taken = client
            .query_opt(
                "UPDATE tally_log_head SET term = term + 1, holder = $1, holder_url = $2, \
                 expires_at = now() + $3::float8 * interval '1 second', updated_at = now() \
                 WHERE expires_at < now() OR holder = $1 RETURNING term, last_pos",
                &[
                    &options.holder,
                    &options.advertise_url,
                    &options.lease.as_secs_f64(),
                ],
            )
            .map_err(db_error)?;
        let head = match taken {
            Some(row) => Head {
                term: row.get(0),
                trusted_until: Some(sent + options.lease.saturating_sub(LEASE_MARGIN)),
                last_pos: row.get(1),
                unresolved: false,
            },
            None => {
                let row = client
                    .query_one("SELECT last_pos FROM tally_log_head", &[])
                    .map_err(db_error)?;
                Head {
                    term: 0,
                    trusted_until: None,
                    last_pos: row.get(0),
                    unresolved: false,
                }
            }
        };
        drop(client);
        tracing::info!(database = %name, term = head.term, head = head.last_pos, writer = head.term != 0, "PostgreSQL store open");
        Ok(Self::new((pool, config, name), options, head, None))
    }

    fn new(
        (pool, config, name): (r2d2::Pool<PostgresConnectionManager<NoTls>>, Config, String),
        options: &PgOptions,
        head: Head,
        snapshot: Option<Pooled>,
    ) -> Self {
        Self {
            pool: Some(pool),
            config,
            writer: Mutex::new(None),
            head: Mutex::new(head),
            holder: options.holder.clone(),
            advertise_url: options.advertise_url.clone(),
            lease: options.lease,
            closed: Arc::new(AtomicBool::new(false)),
            reconnects: Arc::default(),
            writer_lost: AtomicBool::new(false),
            pinned: Mutex::new(None),
            snapshot: snapshot.map(Mutex::new),
            name,
        }
    }

    /// A read-only view of the database as of now (one REPEATABLE READ transaction), for
    /// `verify` and `export` beside a running tally: it takes no term, so it fences nobody,
    /// and what it reads is one consistent state however the writer goes on.
    pub fn open_snapshot(options: &PgOptions) -> Result<Self, StoreError> {
        apart(|| Self::open_snapshot_here(options))
    }

    fn open_snapshot_here(options: &PgOptions) -> Result<Self, StoreError> {
        let (pool, config, name) = connect(options)?;
        let mut client = pool.get().map_err(db_error)?;
        let schema: Option<String> = client
            .query_one("SELECT to_regclass('tally_kv')::text", &[])
            .map_err(db_error)?
            .get(0);
        if schema.is_none() {
            return Err(StoreError::Io(format!("{name} holds no tally log")));
        }
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET LOCAL idle_in_transaction_session_timeout = 0")
            .map_err(db_error)?;
        let row = client
            .query_one("SELECT term, last_pos FROM tally_log_head", &[])
            .map_err(db_error)?;
        let head = Head {
            term: row.get::<_, i64>(0),
            trusted_until: None,
            last_pos: row.get(1),
            unresolved: false,
        };
        Ok(Self::new((pool, config, name), options, head, Some(client)))
    }

    /// The term this process appends under.
    pub fn term(&self) -> Result<i64, StoreError> {
        Ok(self.lock()?.term)
    }

    /// The head as the head row has it (what start-up checks the meta against).
    pub fn head_row(&self) -> Result<(i64, i64), StoreError> {
        let row =
            self.reading(|c| c.query_typed_one("SELECT term, last_pos FROM tally_log_head", &[]))?;
        Ok((row.get(0), row.get(1)))
    }

    /// Runs a read on the snapshot's connection, or else on one from the pool (given back
    /// before the caller looks at what it read).
    fn reading<T>(
        &self,
        read: impl Fn(&mut Client) -> Result<T, postgres_error::Error> + Send,
    ) -> Result<T, StoreError>
    where
        T: Send,
    {
        let me = std::thread::current().id();
        apart(move || {
            if let Some(snapshot) = &self.snapshot {
                let mut client = snapshot
                    .lock()
                    .map_err(|_| StoreError::Io("store lock poisoned".to_owned()))?;
                return read(&mut client).map_err(db_error);
            }
            let mut pinned = self
                .pinned
                .lock()
                .map_err(|_| StoreError::Io("store lock poisoned".to_owned()))?;
            if let Some((_, client)) = pinned.as_mut().filter(|(owner, _)| *owner == me) {
                return read(client).map_err(db_error);
            }
            drop(pinned);
            self.on_live_connection(read).map(|(value, _)| value)
        })
    }

    /// A pooled connection that answers (a round trip to find out), for what runs now and
    /// then and would rather not fail on a connection the server closed meanwhile: the lease,
    /// giving it up, pinning a snapshot, the size on disk.
    fn live_client(&self) -> Result<Pooled, StoreError> {
        self.on_live_connection(|client| client.simple_query("").map(drop))
            .map(|((), client)| client)
    }

    /// Runs `use_connection` on a pooled connection, and again on another while the one it had
    /// turns out closed. The pool does not test a connection before handing it out (that is a
    /// round trip on every read); one the server closed while it sat idle (a restart, a
    /// failover) fails its first use and is closed then. Only for what is safe to run twice
    /// (reads, the probe of [`Self::live_client`]). The pool drops a closed connection when it
    /// comes back.
    fn on_live_connection<T>(
        &self,
        use_connection: impl Fn(&mut Client) -> Result<T, postgres_error::Error>,
    ) -> Result<(T, Pooled), StoreError> {
        let tries = self.pool.as_ref().map_or(0, r2d2::Pool::max_size);
        let mut retried = 0;
        loop {
            let mut client = self.client()?;
            match use_connection(&mut client) {
                Ok(value) => return Ok((value, client)),
                Err(_) if client.is_closed() && retried < tries => {
                    retried += 1;
                    self.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => return Err(db_error(error)),
            }
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Head>, StoreError> {
        self.head
            .lock()
            .map_err(|_| StoreError::Io("store lock poisoned".to_owned()))
    }

    /// A pooled connection as it is, untested (see [`Self::on_live_connection`]).
    fn client(&self) -> Result<Pooled, StoreError> {
        self.pool
            .as_ref()
            .ok_or_else(|| StoreError::Io("the PostgreSQL store is closed".to_owned()))?
            .get()
            .map_err(|e| StoreError::Io(format!("cannot reach PostgreSQL at {}: {e}", self.name)))
    }

    /// The writes of one apply, in one transaction, committed. `Ok(Ok(true))`: committed;
    /// `Ok(Ok(false))`: the fence refused it; `Ok(Err(_))`: refused before COMMIT. In all of
    /// these the database holds none of it. `Err(_)`: the outcome is not known (the COMMIT, or
    /// the one statement of a common group commit, went out and no answer came back).
    ///
    /// The common group commit is one statement and no `BEGIN`/`COMMIT`: PostgreSQL runs a
    /// lone statement as a transaction of its own, committed before it answers, so the commit
    /// costs one round trip instead of three.
    fn write(
        client: &mut Client,
        statements: &Statements,
        ops: &[Op],
        durable: bool,
        (head, lease): (Head, f64),
        meta: Option<&crate::Meta>,
    ) -> Result<Result<bool, StoreError>, postgres_error::Error> {
        let writes = match Writes::of(ops, head.last_pos) {
            Ok(writes) => writes,
            Err(error) => return Ok(Err(error)),
        };
        if let (Some(meta), true, true, true, true) = (
            meta,
            durable,
            writes.deletes.is_empty(),
            writes.cleared.is_empty(),
            writes.usage.rows.len() <= ONE_STATEMENT_USAGE_ROWS,
        ) {
            let columns = UsageColumns::of(&writes.usage.rows);
            let mut params: Vec<&(dyn postgres_error::types::ToSql + Sync)> = Vec::new();
            let positions = (|| {
                Ok::<_, StoreError>((
                    seq_i64(meta.head)?,
                    seq_i64(meta.epoch)?,
                    seq_i64(meta.usage_floor)?,
                ))
            })();
            let (head_pos, epoch, floor) = match positions {
                Ok(positions) => positions,
                Err(error) => return Ok(Err(error)),
            };
            params.extend([
                &head_pos as &(dyn postgres_error::types::ToSql + Sync),
                &epoch,
                &floor,
                &head.term,
                &head.last_pos,
                &lease,
                &writes.put_keys,
                &writes.put_values,
            ]);
            params.extend(columns.params());
            // Any error is an unknown outcome here: even an error the server reports may come
            // after its commit (a shutdown), so the head row is asked.
            let matched = client.execute(&statements.append, &params)?;
            return Ok(Ok(matched > 0));
        }
        let mut tx = client.transaction()?;
        match Self::write_in(&mut tx, statements, writes, durable, (head, lease), meta) {
            Ok(true) => {}
            outcome => return Ok(outcome),
        }
        tx.commit()?;
        Ok(Ok(true))
    }

    /// The writes of one apply inside `tx`, before its COMMIT; `Ok(false)` when the fence
    /// refused it.
    fn write_in(
        tx: &mut Transaction<'_>,
        statements: &Statements,
        writes: Writes<'_>,
        durable: bool,
        (head, lease): (Head, f64),
        meta: Option<&crate::Meta>,
    ) -> Result<bool, StoreError> {
        if !durable {
            tx.batch_execute("SET LOCAL synchronous_commit = off")
                .map_err(db_error)?;
        }
        let Writes {
            put_keys,
            put_values,
            deletes,
            mut cleared,
            usage,
        } = writes;
        for key in deletes.iter().filter(|key| key.first() == Some(&USAGE)) {
            let old = tx
                .query_opt("SELECT value FROM tally_kv WHERE key = $1", &[key])
                .map_err(db_error)?;
            if let Some(row) = old {
                let value: Vec<u8> = row.get(0);
                let entries = decode_block(USAGE, key, &value)?;
                if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
                    cleared.push((seq_i64(first.0)?, seq_i64(last.0)?));
                }
            }
        }
        let fenced = match meta {
            Some(meta) => tx.execute(
                &statements.fence_head,
                &[
                    &seq_i64(meta.head)?,
                    &seq_i64(meta.epoch)?,
                    &seq_i64(meta.usage_floor)?,
                    &head.term,
                    &head.last_pos,
                    &lease,
                ],
            ),
            None => tx.execute(&statements.fence_term, &[&head.term, &lease]),
        }
        .map_err(db_error)?;
        if fenced == 0 {
            return Ok(false);
        }
        if !deletes.is_empty() {
            tx.execute(&statements.delete, &[&deletes])
                .map_err(db_error)?;
        }
        if !put_keys.is_empty() {
            tx.execute(&statements.put, &[&put_keys, &put_values])
                .map_err(db_error)?;
        }
        for (from, to) in cleared {
            tx.execute(&statements.clear_usage, &[&from, &to])
                .map_err(db_error)?;
        }
        usage.insert(tx)?;
        Ok(true)
    }

    /// After a write whose outcome is unknown (the connection or the COMMIT failed): what the
    /// head row says now. `Ok(true)`: the write landed.
    fn resolve(&self, head: &mut Head, meta: Option<&crate::Meta>) -> Result<bool, StoreError> {
        let (term, last_pos) = self.head_row()?;
        if term != head.term {
            let ours = std::mem::replace(&mut head.term, 0);
            head.trusted_until = None;
            return Err(self.fenced(ours, term));
        }
        head.last_pos = last_pos;
        Ok(match meta {
            Some(meta) => seq_i64(meta.head)? == last_pos && self.meta_is(meta)?,
            None => false,
        })
    }

    fn meta_is(&self, meta: &crate::Meta) -> Result<bool, StoreError> {
        Ok(match self.get(META)? {
            Some(value) => decode_meta(&value)? == *meta,
            None => false,
        })
    }

    fn fenced(&self, ours: i64, now: i64) -> StoreError {
        StoreError::Fenced(format!(
            "this process writes under term {ours}, the database is at term {now}: another \
             tally took over the log at {}",
            self.name
        ))
    }
}

/// Runs `f` where the blocking client may run, and waits for it. The client drives each
/// connection with a small runtime of its own, which must never run on a thread that drives
/// async tasks (tally calls the store from those at start-up, for metrics and in tests). On a
/// thread with no runtime at all (the engine's writer thread, which makes every commit) `f`
/// runs right there; anywhere else on a short-lived thread of its own, which costs a thread
/// start beside the round trip to the database.
fn apart<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|scope| match scope.spawn(f).join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

fn seq_i64(seq: Seq) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|_| StoreError::Encode(format!("position {seq} beyond i64")))
}

/// The pool for `options` (one connection made at once, so a wrong URL fails here) and the
/// database's name without a password.
fn connect(
    options: &PgOptions,
) -> Result<(r2d2::Pool<PostgresConnectionManager<NoTls>>, Config, String), StoreError> {
    let name = redacted(&options.url);
    let mut config = Config::from_str(&options.url)
        .map_err(|e| StoreError::Io(format!("storage.postgres_url ({name}): {e}")))?;
    config
        .connect_timeout(options.connect_timeout)
        .application_name("tally");
    let statement_ms = options.statement_timeout.as_millis().max(1);
    config.options(&format!(
        "-c statement_timeout={statement_ms} -c idle_in_transaction_session_timeout={statement_ms}"
    ));
    let manager = PostgresConnectionManager::new(config.clone(), NoTls);
    let pool = r2d2::Pool::builder()
        .max_size(options.pool_size.max(1))
        .min_idle(Some(1))
        // No round trip before every read: see `PgBackend::reading` and `live_client`.
        .test_on_check_out(false)
        .connection_timeout(options.connect_timeout)
        .build(manager)
        .map_err(|e| StoreError::Io(format!("cannot connect to PostgreSQL at {name}: {e}")))?;
    Ok((pool, config, name))
}

fn migrate(client: &mut Client) -> Result<(), StoreError> {
    migrate_to(client, None)
}

/// The migrations up to `version` (all of them when `None`), under the migration lock.
pub(crate) fn migrate_to(client: &mut Client, version: Option<i32>) -> Result<(), StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .map_err(db_error)?;
    let target = match version {
        Some(version) => refinery::Target::Version(version),
        None => refinery::Target::Latest,
    };
    let result = migrations::migrations::runner()
        .set_target(target)
        .set_migration_table_name("tally_schema_history")
        .run(client)
        .map(drop)
        .map_err(|e| StoreError::Io(format!("PostgreSQL migrations failed: {e}")));
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .map_err(db_error)?;
    result
}

/// What one apply writes, sorted out before anything is sent.
struct Writes<'a> {
    put_keys: Vec<&'a [u8]>,
    put_values: Vec<&'a [u8]>,
    deletes: Vec<&'a [u8]>,
    /// The usage rows of the usage blocks put.
    usage: UsageRows,
    /// Ranges of positions whose usage rows go (the blocks put anew; the blocks deleted are
    /// added inside the transaction, which reads what they held).
    cleared: Vec<(i64, i64)>,
}

impl<'a> Writes<'a> {
    fn of(ops: &'a [Op], head: i64) -> Result<Self, StoreError> {
        let mut writes = Writes {
            put_keys: Vec::new(),
            put_values: Vec::new(),
            deletes: Vec::new(),
            usage: UsageRows::default(),
            cleared: Vec::new(),
        };
        for op in ops {
            match op {
                Op::Put(key, value) => {
                    if key.first() == Some(&USAGE) {
                        let mut span: Option<(Seq, Seq)> = None;
                        let _ = visit_usage_block(key, value, |seq, slot| {
                            span = Some(span.map_or((seq, seq), |(first, _)| (first, seq)));
                            if let UsageSlot::Event(u) = slot {
                                writes.usage.push(seq, u)?;
                            }
                            Ok(ControlFlow::Continue(()))
                        })?;
                        if let Some((first, last)) = span {
                            // A block past the head is new: nothing of it is mirrored yet.
                            if seq_i64(first)? <= head {
                                writes.cleared.push((seq_i64(first)?, seq_i64(last)?));
                            }
                        }
                    }
                    writes.put_keys.push(key);
                    writes.put_values.push(value);
                }
                Op::Delete(key) => writes.deletes.push(key),
            }
        }
        Ok(writes)
    }
}

/// Usage events to mirror, written with one binary `COPY` when there are more than a group
/// commit's statement takes (a purge writes one per started app). Measured: 100,000 reseeded
/// rows as chunked `unnest` inserts made a purge's p50 2.03 s, with COPY 1.08-1.50 s.
#[derive(Default)]
struct UsageRows {
    rows: Vec<(i64, UsageEvent)>,
}

const USAGE_COLUMNS: &str = "seq, guid, created_at, state, previous_state, instance_count, \
    previous_instance_count, memory_in_mb_per_instance, previous_memory_in_mb_per_instance, \
    app_guid, app_name, space_guid, space_name, org_guid, buildpack_guid, buildpack_name, \
    package_state, previous_package_state, parent_app_guid, parent_app_name, process_type, \
    task_guid, task_name";

/// Usage rows a group commit writes in its one statement (`unnest` of one array per column);
/// more, as a purge writes, go in with `COPY`.
const ONE_STATEMENT_USAGE_ROWS: usize = 1024;

/// The usage rows as one array per column of `tally_usage_events`, in [`USAGE_COLUMNS`] order.
struct UsageColumns<'a> {
    seq: Vec<i64>,
    guid: Vec<String>,
    created_at: Vec<tally_domain::Timestamp>,
    state: Vec<&'static str>,
    previous_state: Vec<Option<&'static str>>,
    instance_count: Vec<i64>,
    previous_instance_count: Vec<Option<i64>>,
    memory: Vec<i64>,
    previous_memory: Vec<Option<i64>>,
    app_guid: Vec<&'a str>,
    app_name: Vec<&'a str>,
    space_guid: Vec<String>,
    space_name: Vec<&'a str>,
    org_guid: Vec<String>,
    buildpack_guid: Vec<Option<String>>,
    buildpack_name: Vec<Option<&'a str>>,
    package_state: Vec<Option<&'a str>>,
    previous_package_state: Vec<Option<&'a str>>,
    parent_app_guid: Vec<Option<String>>,
    parent_app_name: Vec<Option<&'a str>>,
    process_type: Vec<Option<&'a str>>,
    task_guid: Vec<Option<String>>,
    task_name: Vec<Option<&'a str>>,
}

impl<'a> UsageColumns<'a> {
    fn of(rows: &'a [(i64, UsageEvent)]) -> Self {
        let text = |g: Option<tally_domain::Guid>| g.map(|g| g.to_string());
        let each = |f: fn(&'a UsageEvent) -> Option<&'a str>| -> Vec<Option<&'a str>> {
            rows.iter().map(|(_, u)| f(u)).collect()
        };
        Self {
            seq: rows.iter().map(|(seq, _)| *seq).collect(),
            guid: rows.iter().map(|(_, u)| u.guid.to_string()).collect(),
            created_at: rows.iter().map(|(_, u)| u.created_at).collect(),
            state: rows.iter().map(|(_, u)| u.state.as_str()).collect(),
            previous_state: rows
                .iter()
                .map(|(_, u)| u.previous_state.map(|s| s.as_str()))
                .collect(),
            instance_count: rows.iter().map(|(_, u)| u.instance_count).collect(),
            previous_instance_count: rows
                .iter()
                .map(|(_, u)| u.previous_instance_count)
                .collect(),
            memory: rows
                .iter()
                .map(|(_, u)| u.memory_in_mb_per_instance)
                .collect(),
            previous_memory: rows
                .iter()
                .map(|(_, u)| u.previous_memory_in_mb_per_instance)
                .collect(),
            app_guid: rows.iter().map(|(_, u)| u.app_guid.as_str()).collect(),
            app_name: rows.iter().map(|(_, u)| u.app_name.as_str()).collect(),
            space_guid: rows.iter().map(|(_, u)| u.space_guid.to_string()).collect(),
            space_name: rows.iter().map(|(_, u)| u.space_name.as_str()).collect(),
            org_guid: rows.iter().map(|(_, u)| u.org_guid.to_string()).collect(),
            buildpack_guid: rows.iter().map(|(_, u)| text(u.buildpack_guid)).collect(),
            buildpack_name: each(|u| u.buildpack_name.as_deref()),
            package_state: each(|u| u.package_state.as_deref()),
            previous_package_state: each(|u| u.previous_package_state.as_deref()),
            parent_app_guid: rows.iter().map(|(_, u)| text(u.parent_app_guid)).collect(),
            parent_app_name: each(|u| u.parent_app_name.as_deref()),
            process_type: each(|u| u.process_type.as_deref()),
            task_guid: rows.iter().map(|(_, u)| text(u.task_guid)).collect(),
            task_name: each(|u| u.task_name.as_deref()),
        }
    }

    /// The 23 arrays, as the statement's parameters `$9 ..= $31`.
    fn params(&self) -> [&(dyn postgres_error::types::ToSql + Sync); 23] {
        [
            &self.seq,
            &self.guid,
            &self.created_at,
            &self.state,
            &self.previous_state,
            &self.instance_count,
            &self.previous_instance_count,
            &self.memory,
            &self.previous_memory,
            &self.app_guid,
            &self.app_name,
            &self.space_guid,
            &self.space_name,
            &self.org_guid,
            &self.buildpack_guid,
            &self.buildpack_name,
            &self.package_state,
            &self.previous_package_state,
            &self.parent_app_guid,
            &self.parent_app_name,
            &self.process_type,
            &self.task_guid,
            &self.task_name,
        ]
    }
}

impl UsageRows {
    fn push(&mut self, seq: Seq, u: UsageEvent) -> Result<(), StoreError> {
        self.rows.push((seq_i64(seq)?, u));
        Ok(())
    }

    fn insert(&self, tx: &mut Transaction<'_>) -> Result<(), StoreError> {
        use postgres_error::binary_copy::BinaryCopyInWriter;
        use postgres_error::types::{ToSql, Type};
        if self.rows.is_empty() {
            return Ok(());
        }
        let text = |g: Option<tally_domain::Guid>| g.map(|g| g.to_string());
        let types = [
            Type::INT8,
            Type::TEXT,
            Type::TIMESTAMPTZ,
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
        ];
        let sink = tx
            .copy_in(&format!(
                "COPY tally_usage_events ({USAGE_COLUMNS}) FROM STDIN (FORMAT binary)"
            ))
            .map_err(db_error)?;
        let mut writer = BinaryCopyInWriter::new(sink, &types);
        for (seq, u) in &self.rows {
            let (guid, space, org) = (
                u.guid.to_string(),
                u.space_guid.to_string(),
                u.org_guid.to_string(),
            );
            let (buildpack, parent, task) = (
                text(u.buildpack_guid),
                text(u.parent_app_guid),
                text(u.task_guid),
            );
            let row: [&(dyn ToSql + Sync); 23] = [
                seq,
                &guid,
                &u.created_at,
                &u.state.as_str(),
                &u.previous_state.map(|s| s.as_str()),
                &u.instance_count,
                &u.previous_instance_count,
                &u.memory_in_mb_per_instance,
                &u.previous_memory_in_mb_per_instance,
                &u.app_guid,
                &u.app_name,
                &space,
                &u.space_name,
                &org,
                &buildpack,
                &u.buildpack_name,
                &u.package_state,
                &u.previous_package_state,
                &parent,
                &u.parent_app_name,
                &u.process_type,
                &task,
                &u.task_name,
            ];
            writer.write(&row).map_err(db_error)?;
        }
        writer.finish().map_err(db_error)?;
        Ok(())
    }
}

impl Backend for PgBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let row = self.reading(|c| {
            c.query_typed_opt(
                "SELECT value FROM tally_kv WHERE key = $1",
                &[(&key, Type::BYTEA)],
            )
        })?;
        Ok(row.map(|r| r.get(0)))
    }

    fn scan(
        &self,
        from: &[u8],
        to: &[u8],
        reverse: bool,
        visit: &mut Visitor<'_>,
    ) -> Result<(), StoreError> {
        // Keyset pages: [from, to) ascending, or descending from `to`. Pages start small and
        // grow: most scans stop early (the block holding a position is the first one found
        // scanning back from it; a follower's look at the log finds a block or two), and a
        // page is sent whole however soon the visitor stops.
        let mut low = from.to_vec();
        let mut high = to.to_vec();
        let mut first = true;
        let mut chunk = if reverse { 1 } else { SCAN_FIRST_CHUNK };
        loop {
            let limit = chunk;
            let sql = if reverse {
                "SELECT key, value FROM tally_kv WHERE key >= $1 AND key < $2 \
                 ORDER BY key DESC LIMIT $3"
            } else if first {
                "SELECT key, value FROM tally_kv WHERE key >= $1 AND key < $2 \
                 ORDER BY key LIMIT $3"
            } else {
                "SELECT key, value FROM tally_kv WHERE key > $1 AND key < $2 \
                 ORDER BY key LIMIT $3"
            };
            // Typed parameters: one round trip (no separate prepare and its describe).
            let rows = self.reading(|client| {
                client.query_typed(
                    sql,
                    &[
                        (&low, Type::BYTEA),
                        (&high, Type::BYTEA),
                        (&limit, Type::INT8),
                    ],
                )
            })?;
            first = false;
            let full = rows.len() as i64 == limit;
            chunk = (chunk * 8).min(SCAN_CHUNK);
            let mut last: Option<Vec<u8>> = None;
            for row in rows {
                let key: Vec<u8> = row.get(0);
                let value: Vec<u8> = row.get(1);
                if visit(&key, &value)?.is_break() {
                    return Ok(());
                }
                last = Some(key);
            }
            match (full, last) {
                (true, Some(key)) if reverse => high = key,
                (true, Some(key)) => low = key,
                _ => return Ok(()),
            }
        }
    }

    fn scan_ranges(
        &self,
        ranges: &[(&[u8], &[u8])],
        limit: usize,
    ) -> Result<Vec<Ranged>, StoreError> {
        let lows: Vec<&[u8]> = ranges.iter().map(|(from, _)| *from).collect();
        let highs: Vec<&[u8]> = ranges.iter().map(|(_, to)| *to).collect();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // One statement: every range of one snapshot, in one round trip.
        let rows = self.reading(|client| {
            client.query_typed(
                "SELECT r.n, t.key, t.value \
                 FROM unnest($1::bytea[], $2::bytea[]) WITH ORDINALITY AS r(lo, hi, n) \
                 CROSS JOIN LATERAL (SELECT key, value FROM tally_kv \
                   WHERE key >= r.lo AND key < r.hi ORDER BY key LIMIT $3) t \
                 ORDER BY r.n, t.key",
                &[
                    (&lows, Type::BYTEA_ARRAY),
                    (&highs, Type::BYTEA_ARRAY),
                    (&limit, Type::INT8),
                ],
            )
        })?;
        let mut out: Vec<Ranged> = ranges.iter().map(|_| Ranged::default()).collect();
        for row in rows {
            let n: i64 = row.get(0);
            let range = usize::try_from(n - 1)
                .ok()
                .and_then(|i| out.get_mut(i))
                .ok_or_else(|| StoreError::Io(format!("PostgreSQL answered range {n}")))?;
            range.pairs.push((row.get(1), row.get(2)));
        }
        for range in &mut out {
            range.full = range.pairs.len() as i64 >= limit;
        }
        Ok(out)
    }

    fn apply(&self, ops: Vec<Op>, durable: bool) -> Result<(), StoreError> {
        apart(|| self.apply_here(ops, durable))
    }

    fn refresh(&self) -> Result<(), StoreError> {
        apart(|| self.refresh_here())
    }

    fn size_on_disk(&self) -> u64 {
        apart(|| self.size_on_disk_here())
    }

    fn lead(&self) -> Result<crate::Lead, StoreError> {
        apart(|| self.lead_here())
    }

    fn resign(&self) -> Result<(), StoreError> {
        apart(|| self.resign_here())
    }

    fn durable_head(&self) -> Result<Option<Seq>, StoreError> {
        let (_, last_pos) = self.head_row()?;
        Ok(Some(last_pos.unsigned_abs()))
    }

    fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    fn pin(&self) -> Result<(), StoreError> {
        if self.snapshot.is_some() {
            return Ok(());
        }
        let me = std::thread::current().id();
        apart(|| {
            let mut client = self.live_client()?;
            client
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .map_err(db_error)?;
            *self
                .pinned
                .lock()
                .map_err(|_| StoreError::Io("store lock poisoned".to_owned()))? =
                Some((me, client));
            Ok(())
        })
    }

    fn unpin(&self) {
        let taken = self.pinned.lock().ok().and_then(|mut p| p.take());
        if let Some((_, mut client)) = taken {
            apart(move || {
                let _ = client.batch_execute("COMMIT");
            });
        }
    }

    fn watch(&self, wake: Box<dyn Fn() + Send + Sync>) -> Result<(), StoreError> {
        if self.snapshot.is_some() {
            return Ok(());
        }
        let (config, name, closed) = (self.config.clone(), self.name.clone(), self.closed.clone());
        let reconnects = self.reconnects.clone();
        std::thread::Builder::new()
            .name("tally-listen".to_owned())
            .spawn(move || Self::listen(config, name, closed, reconnects, wake))
            .map(drop)
            .map_err(|e| StoreError::Io(format!("cannot start the LISTEN thread: {e}")))
    }
}

impl Drop for PgBackend {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Relaxed);
        // Connections close on the blocking client's own runtime: not on an async thread.
        let (pool, snapshot) = (self.pool.take(), self.snapshot.take());
        let writer = self.writer.get_mut().ok().and_then(Option::take);
        apart(move || drop((pool, snapshot, writer)));
    }
}

impl PgBackend {
    fn apply_here(&self, ops: Vec<Op>, durable: bool) -> Result<(), StoreError> {
        if self.snapshot.is_some() {
            return Err(StoreError::Io(format!(
                "{} is open read-only (a snapshot for verify or export)",
                self.name
            )));
        }
        let meta = match ops.iter().rev().find_map(|op| match op {
            Op::Put(key, value) if key.as_slice() == META => Some(value),
            _ => None,
        }) {
            Some(value) => Some(decode_meta(value)?),
            None => None,
        };
        let mut head = self.lock()?;
        if head.unresolved {
            return Err(StoreError::Io(
                "an earlier commit's outcome is not known yet; the log must be re-read first"
                    .to_owned(),
            ));
        }
        if head.term == 0 {
            return Err(StoreError::Fenced(format!(
                "this process does not hold the lease on {}: another node writes",
                self.name
            )));
        }
        let sent = Instant::now();
        let mut writer = self
            .writer
            .lock()
            .map_err(|_| StoreError::Io("store lock poisoned".to_owned()))?;
        if writer.is_none() {
            if self.writer_lost.swap(false, Ordering::Relaxed) {
                self.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            *writer = Some(Writer::connect(&self.config).map_err(|e| {
                StoreError::Io(format!("cannot reach PostgreSQL at {}: {e}", self.name))
            })?);
        }
        let Some(Writer { client, statements }) = writer.as_mut() else {
            return Err(StoreError::Io("no connection to PostgreSQL".to_owned()));
        };
        let lease = (*head, self.lease.as_secs_f64());
        let attempt = Self::write(client, statements, &ops, durable, lease, meta.as_ref());
        if !matches!(attempt, Ok(Ok(_))) {
            // Whatever failed, the next write starts on a new connection.
            *writer = None;
            self.writer_lost.store(true, Ordering::Relaxed);
        }
        drop(writer);
        match attempt {
            Ok(Ok(true)) => {
                if let Some(meta) = &meta {
                    head.last_pos = seq_i64(meta.head)?;
                }
                head.trusted_until = Some(sent + self.lease.saturating_sub(LEASE_MARGIN));
                Ok(())
            }
            Ok(Ok(false)) => {
                let (term, _) = self.head_row()?;
                if term == head.term {
                    return Err(StoreError::Sequence(format!(
                        "the head row is not at {}: another writer appended",
                        head.last_pos
                    )));
                }
                let ours = std::mem::replace(&mut head.term, 0);
                head.trusted_until = None;
                Err(self.fenced(ours, term))
            }
            Ok(Err(error)) => {
                // The statement failed mid-transaction (a timeout, the connection): the
                // transaction did not commit, but the connection may be gone.
                let _ = self.resolve(&mut head, None);
                Err(error)
            }
            Err(error) => {
                // The COMMIT (or the lone statement of a group commit) went out and no answer,
                // or an error that may have come after the commit, came back: ask the head row
                // until it says.
                let asking = std::time::Instant::now();
                loop {
                    match self.resolve(&mut head, meta.as_ref()) {
                        Ok(true) => {
                            tracing::warn!(%error, "a commit's answer was lost; the head row shows it landed");
                            return Ok(());
                        }
                        Ok(false) => return Err(db_error(error)),
                        Err(StoreError::Fenced(reason)) => return Err(StoreError::Fenced(reason)),
                        Err(resolve_error) if asking.elapsed() >= RESOLVE_FOR => {
                            tracing::error!(%error, %resolve_error, "a commit's outcome stays unknown until PostgreSQL answers again; writes wait for it");
                            head.unresolved = true;
                            return Err(db_error(error));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(200)),
                    }
                }
            }
        }
    }

    fn refresh_here(&self) -> Result<(), StoreError> {
        if self.snapshot.is_some() {
            return Ok(());
        }
        let mut head = self.lock()?;
        let (term, last_pos) = self.head_row()?;
        if head.term != 0 && term != head.term {
            // Another node took over: this one follows from now on.
            tracing::warn!(ours = head.term, now = term, database = %self.name, "the lease was taken over; this node no longer writes");
            head.term = 0;
            head.trusted_until = None;
        }
        head.last_pos = last_pos;
        head.unresolved = false;
        Ok(())
    }

    fn lead_here(&self) -> Result<crate::Lead, StoreError> {
        if self.snapshot.is_some() {
            return Err(StoreError::Io(format!("{} is open read-only", self.name)));
        }
        let mut head = self.lock()?;
        let mut client = self.live_client()?;
        let lease = self.lease.as_secs_f64();
        let sent = Instant::now();
        let trusted_until = sent + self.lease.saturating_sub(LEASE_MARGIN);
        if head.term != 0 {
            let renewed = client
                .query_opt(
                    "UPDATE tally_log_head SET expires_at = now() + $2::float8 * interval '1 second' \
                     WHERE term = $1 RETURNING last_pos",
                    &[&head.term, &lease],
                )
                .map_err(db_error)?;
            match renewed {
                Some(row) => {
                    head.trusted_until = Some(trusted_until);
                    return Ok(crate::Lead::Writer {
                        term: head.term.unsigned_abs(),
                        trusted_until,
                        acquired: false,
                        head: row.get::<_, i64>(0).unsigned_abs(),
                    });
                }
                None => {
                    tracing::warn!(term = head.term, database = %self.name, "the lease was taken over; this node no longer writes");
                    head.term = 0;
                    head.trusted_until = None;
                }
            }
        }
        let taken = client
            .query_opt(
                "UPDATE tally_log_head SET term = term + 1, holder = $1, holder_url = $2, \
                 expires_at = now() + $3::float8 * interval '1 second', updated_at = now() \
                 WHERE expires_at < now() RETURNING term, last_pos",
                &[&self.holder, &self.advertise_url, &lease],
            )
            .map_err(db_error)?;
        if let Some(row) = taken {
            head.term = row.get(0);
            head.last_pos = row.get(1);
            head.trusted_until = Some(trusted_until);
            head.unresolved = false;
            tracing::info!(term = head.term, head = head.last_pos, database = %self.name, "took the lease: this node writes");
            return Ok(crate::Lead::Writer {
                term: head.term.unsigned_abs(),
                trusted_until,
                acquired: true,
                head: head.last_pos.unsigned_abs(),
            });
        }
        let row = client
            .query_one(
                "SELECT term, holder_url, expires_at >= now() FROM tally_log_head",
                &[],
            )
            .map_err(db_error)?;
        let (term, url, live): (i64, String, bool) = (row.get(0), row.get(1), row.get(2));
        Ok(crate::Lead::Follower {
            term: term.unsigned_abs(),
            leader: (live && !url.is_empty()).then_some(url),
        })
    }

    fn resign_here(&self) -> Result<(), StoreError> {
        if self.snapshot.is_some() {
            return Ok(());
        }
        let mut head = self.lock()?;
        if head.term == 0 {
            return Ok(());
        }
        let mut client = self.live_client()?;
        client
            .execute(
                &format!(
                    "WITH head AS (UPDATE tally_log_head SET expires_at = '-infinity' \
                     WHERE term = $1 RETURNING last_pos) \
                     SELECT pg_notify('{CHANNEL}', last_pos::text) FROM head"
                ),
                &[&head.term],
            )
            .map_err(db_error)?;
        tracing::info!(term = head.term, database = %self.name, "gave the lease up");
        head.term = 0;
        head.trusted_until = None;
        Ok(())
    }

    /// The LISTEN loop: a connection of its own, `wake` after every notification and every
    /// (re)connect, until the store is dropped.
    fn listen(
        config: Config,
        name: String,
        closed: Arc<AtomicBool>,
        reconnects: Arc<std::sync::atomic::AtomicU64>,
        wake: Box<dyn Fn() + Send + Sync>,
    ) {
        let mut failing = false;
        let mut connected_before = false;
        while !closed.load(Ordering::Relaxed) {
            if std::mem::replace(&mut connected_before, true) {
                reconnects.fetch_add(1, Ordering::Relaxed);
            }
            let mut client = match config.connect(NoTls) {
                Ok(client) => client,
                Err(error) => {
                    if !failing {
                        tracing::warn!(%error, database = %name, "cannot LISTEN for commits of other nodes; polling until it can");
                        failing = true;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
            };
            if let Err(error) = client.batch_execute(&format!("LISTEN {CHANNEL}")) {
                tracing::warn!(%error, database = %name, "LISTEN failed");
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            if failing {
                tracing::info!(database = %name, "listening for commits of other nodes again");
                failing = false;
            }
            // Whatever was notified while disconnected is lost: read the head now.
            wake();
            loop {
                let mut broken = false;
                {
                    let mut notifications = client.notifications();
                    // Ends after a quiet half second, to look at the connection and at `closed`.
                    let mut quiet = notifications.timeout_iter(Duration::from_millis(500));
                    loop {
                        if closed.load(Ordering::Relaxed) {
                            return;
                        }
                        match quiet.next() {
                            Ok(Some(_)) => wake(),
                            Ok(None) => break,
                            Err(error) => {
                                tracing::warn!(%error, database = %name, "the LISTEN connection failed; reconnecting");
                                broken = true;
                                break;
                            }
                        }
                    }
                }
                if broken || client.is_closed() || closed.load(Ordering::Relaxed) {
                    break;
                }
            }
        }
    }

    fn size_on_disk_here(&self) -> u64 {
        let Ok(mut client) = self.live_client() else {
            return 0;
        };
        client
            .query_one(
                "SELECT pg_total_relation_size('tally_kv') + pg_total_relation_size('tally_usage_events')",
                &[],
            )
            .ok()
            .and_then(|row| u64::try_from(row.get::<_, i64>(0)).ok())
            .unwrap_or(0)
    }
}
