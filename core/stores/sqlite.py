"""The sqlite store: one file that survives restarts, the default for a bridge that runs as one process.

WAL mode with ``synchronous=NORMAL``: a commit costs no fsync of its own, and a power cut loses at
most the last moments of usage and turns, never the file. Each store call is one function that
runs whole, so nothing of another task can land inside its transaction.

Where a call runs is the point of this module. Its statements take a few to a few tens of
microseconds, while handing work to a thread and back costs over a hundred here, more than the
statements themselves (``bench/RESULTS.md``). So a call runs on the event loop's own thread, on a
connection that never waits for a lock (``busy_timeout = 0``). In WAL mode readers never wait for
the writer, and the only writer is this process, so that is nearly always the case. When the file
is locked all the same (another process writing to it, a backup tool), the call moves to a worker
thread with a connection of its own that waits up to ``BUSY_TIMEOUT_MS``, and calls after it queue
behind it there, in order. The work that may take long runs on that thread too: the sweep of expired
rows (at most once a minute, with the write that finds it due, and once a minute on a timer, which
also truncates the WAL and gives freed pages back) and WAL checkpoints, the only step that syncs the
file to disk, started in the background every ``CHECKPOINT_EVERY_WRITES`` writes.

The durable queue is the ``queue`` table: a prompt's row is written in the transaction that sets its
dedupe mark, and deleted in the transaction that stores the turn answering it. Leases stay in this
process (``InProcessLeases``), since the file has one process (``open`` makes sure of it).
Everything else in the file is what must outlive the process. Expired dedupe marks, rate windows and
sessions are deleted on open and then once a minute, so the file stays bounded after a burst even
when no message follows. Reading a session never deletes it: the engine decides when a session is
idle and clears it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import functools
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import IO, TypeVar, cast

from core.store import (
    ALL_SUBJECTS,
    AccessDecision,
    Admission,
    BudgetCheck,
    ChatSetting,
    Claim,
    ModelUsage,
    QueuedMessage,
    Role,
    SessionInfo,
    SessionState,
    StoredImage,
    StoreUnavailable,
    Turn,
    TurnResult,
    TurnSettings,
    UsageDelta,
    UsageTotals,
    Verdict,
)
from core.stores import (
    FixedWindow,
    PruneTimer,
    budget_verdict,
    queued_from_json,
    queued_to_json,
    usage_periods,
    usage_subjects,
)
from core.stores.local_leases import InProcessLeases

_T = TypeVar("_T")

log = logging.getLogger("chatbridge.store.sqlite")

PRUNE_INTERVAL_S = 60.0
BUSY_TIMEOUT_MS = 5000
"""How long the worker thread waits for another process (a backup, a manual fix) that holds the write lock."""
CHECKPOINT_EVERY_WRITES = 1000
"""Writes between two WAL checkpoints; about 300 answered messages, a WAL of a few megabytes."""
PING_MARK = "#ping"
"""The dedupe mark ``ping`` writes; no message key looks like it."""
MIN_SQLITE = (3, 35, 0)
"""``RETURNING`` keeps dedupe and rate counting to one atomic statement."""

_SCHEMA = """
BEGIN;
CREATE TABLE IF NOT EXISTS sessions (
    key         TEXT PRIMARY KEY,
    last_active REAL NOT NULL,
    expires_at  REAL NOT NULL,
    turn_count  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions (expires_at);
CREATE TABLE IF NOT EXISTS turns (
    session_key TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content     TEXT NOT NULL,
    tokens      INTEGER NOT NULL,
    created_at  REAL NOT NULL,
    steps       TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS turns_by_session ON turns (session_key, seq);
CREATE TABLE IF NOT EXISTS turn_images (
    session_key TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    idx         INTEGER NOT NULL,
    mime_type   TEXT NOT NULL,
    data        BLOB NOT NULL,
    tokens      INTEGER NOT NULL,
    PRIMARY KEY (session_key, seq, idx)
);
CREATE TABLE IF NOT EXISTS queue (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    session_key TEXT NOT NULL,
    queued_at   REAL NOT NULL,
    message     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_by_session ON queue (session_key, seq);
CREATE TABLE IF NOT EXISTS seen (
    key        TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_by_expiry ON seen (expires_at);
CREATE TABLE IF NOT EXISTS rate_windows (
    key          TEXT PRIMARY KEY,
    window_index INTEGER NOT NULL,
    hits         INTEGER NOT NULL,
    expires_at   REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rate_windows_by_expiry ON rate_windows (expires_at);
CREATE TABLE IF NOT EXISTS access (
    identity TEXT PRIMARY KEY,
    decision TEXT NOT NULL CHECK (decision IN ('allow', 'deny'))
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage (
    subject           TEXT NOT NULL,
    day               TEXT NOT NULL,
    messages          INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    errors            INTEGER NOT NULL,
    PRIMARY KEY (subject, day)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS model_usage (
    subject           TEXT NOT NULL,
    period            TEXT NOT NULL,
    model             TEXT NOT NULL,
    messages          INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    errors            INTEGER NOT NULL,
    PRIMARY KEY (subject, period, model)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chat_settings (
    chat_id TEXT NOT NULL,
    setting TEXT NOT NULL CHECK (setting IN ('model', 'persona')),
    value   TEXT NOT NULL,
    PRIMARY KEY (chat_id, setting)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS instructions (
    user_id TEXT PRIMARY KEY,
    text    TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS budgets (
    identity TEXT PRIMARY KEY,
    tokens   INTEGER NOT NULL
) WITHOUT ROWID;
COMMIT;
"""

_FIRST_SEEN = """
INSERT INTO seen (key, expires_at) VALUES (:key, :expires_at)
ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at WHERE seen.expires_at <= :now
RETURNING 1
"""

_COUNT_HIT = """
INSERT INTO rate_windows (key, window_index, hits, expires_at) VALUES (:key, :index, 1, :ends_at)
ON CONFLICT (key) DO UPDATE SET
    hits = CASE WHEN rate_windows.window_index = excluded.window_index THEN rate_windows.hits + 1 ELSE 1 END,
    window_index = excluded.window_index,
    expires_at = excluded.expires_at
RETURNING hits
"""

_INSERT_TURN = """
INSERT INTO turns (session_key, seq, role, content, tokens, created_at, steps) VALUES (?, ?, ?, ?, ?, ?, ?)
"""

_TOUCH_SESSION = """
INSERT INTO sessions (key, last_active, expires_at, turn_count) VALUES (?, ?, ?, ?)
ON CONFLICT (key) DO UPDATE SET
    last_active = excluded.last_active,
    expires_at = excluded.expires_at,
    turn_count = sessions.turn_count + excluded.turn_count
"""

_ADD_USAGE_ROW = "(?, ?, ?, ?, ?, ?)"
_ADD_USAGE = """
INSERT INTO usage (subject, day, messages, prompt_tokens, completion_tokens, errors) VALUES {rows}
ON CONFLICT (subject, day) DO UPDATE SET
    messages = messages + excluded.messages,
    prompt_tokens = prompt_tokens + excluded.prompt_tokens,
    completion_tokens = completion_tokens + excluded.completion_tokens,
    errors = errors + excluded.errors
"""

_ADD_MODEL_USAGE = """
INSERT INTO model_usage (subject, period, model, messages, prompt_tokens, completion_tokens, errors)
VALUES {rows}
ON CONFLICT (subject, period, model) DO UPDATE SET
    messages = messages + excluded.messages,
    prompt_tokens = prompt_tokens + excluded.prompt_tokens,
    completion_tokens = completion_tokens + excluded.completion_tokens,
    errors = errors + excluded.errors
"""
_ADD_MODEL_USAGE_ROW = "(?, ?, ?, ?, ?, ?, ?)"

_TOKENS_USED = """
SELECT subject, prompt_tokens + completion_tokens FROM usage WHERE day = ? AND subject IN (?, ?, ?)
"""

_PRUNE = (
    "DELETE FROM seen WHERE expires_at <= :now",
    "DELETE FROM rate_windows WHERE expires_at <= :now",
    "DELETE FROM turns WHERE session_key IN (SELECT key FROM sessions WHERE expires_at <= :now)",
    "DELETE FROM turn_images WHERE session_key IN (SELECT key FROM sessions WHERE expires_at <= :now)",
    "DELETE FROM sessions WHERE expires_at <= :now",
)


class StoreInUse(StoreUnavailable):
    """Another process has the sqlite file open as its store."""


class SqliteStore:
    """A ``Store`` in one sqlite file; sqlite errors surface as ``StoreUnavailable``.

    The file belongs to one process: leases live in that process, so a second bridge on the same
    file would answer the same sessions at once. ``open`` takes an exclusive lock on
    ``<file>.lock`` (released by the system when the process ends, however it ends) and refuses with
    ``StoreInUse`` when another process holds it; ``exclusive=False`` is for ``chatbridge check``,
    which only pings a file a running bridge may own.
    """

    def __init__(
        self,
        path: str,
        prune_interval_s: float = PRUNE_INTERVAL_S,
        *,
        exclusive: bool = True,
        housekeeping_interval_s: float = PRUNE_INTERVAL_S,
    ) -> None:
        self._path = path
        self._housekeeping_interval_s = housekeeping_interval_s
        self._exclusive = exclusive
        self._lock_file: IO[str] | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._db: sqlite3.Connection | None = None
        """Used on the event loop's thread only; never waits for a lock."""
        self._worker_db: sqlite3.Connection | None = None
        """Used on the worker thread only; waits for locks up to ``BUSY_TIMEOUT_MS``."""
        self._worker: ThreadPoolExecutor | None = None
        self._in_worker_calls = 0
        self._writes = 0
        self._checkpoint: asyncio.Future[None] | None = None
        self._leases = InProcessLeases()
        self._prune = PruneTimer(prune_interval_s)
        self._any_runtime_budget = True
        """Whether the ``budgets`` table has a row; this process is the file's only writer, so it
        knows, and a prompt with no configured limit then skips the budget's reads."""

    async def open(self) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise RuntimeError(
                f"the sqlite store needs sqlite >= {'.'.join(map(str, MIN_SQLITE))}, "
                f"this Python has {sqlite3.sqlite_version}"
            )
        if self._worker is not None:
            return
        if self._exclusive:
            self._lock_file = _lock(self._path)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chatbridge-sqlite")
        try:
            loop = asyncio.get_running_loop()
            self._worker_db = await loop.run_in_executor(self._worker, self._connect_worker)
            self._db = _connect(self._path, busy_timeout_ms=0)
            self._db.execute("PRAGMA wal_autocheckpoint = 0")
            await self._write(lambda db: None)
            await self._note_runtime_budgets()
            if self._exclusive:
                self._housekeeping = asyncio.create_task(self._keep_house())
        except sqlite3.Error as exc:
            await self.close()
            raise StoreUnavailable(f"cannot open sqlite store {self._path}: {exc}") from exc
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Waits for the calls in flight on the worker, then closes; closing twice is fine."""
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            await asyncio.wait({self._housekeeping})
            self._housekeeping = None
        worker, self._worker = self._worker, None
        if worker is None:
            self._unlock()
            return
        if self._checkpoint is not None:
            await asyncio.wait({self._checkpoint})
        db, self._db = self._db, None
        if db is not None:
            db.close()
        worker_db, self._worker_db = self._worker_db, None
        if worker_db is not None:
            await asyncio.get_running_loop().run_in_executor(worker, worker_db.close)
        worker.shutdown(wait=False)
        self._unlock()

    def _unlock(self) -> None:
        lock_file, self._lock_file = self._lock_file, None
        if lock_file is not None:
            lock_file.close()  # closing releases the lock

    async def _keep_house(self) -> None:
        """Every ``housekeeping_interval_s``, whether messages come or not: expired rows are deleted, the
        WAL is copied into the file and truncated, and freed pages go back to the file system, so
        that the file shrinks back after a burst."""
        while True:
            await asyncio.sleep(self._housekeeping_interval_s)
            try:
                await self._in_worker(functools.partial(_sweep_and_shrink, now=time.time()))
            except StoreUnavailable as exc:
                log.warning("sqlite housekeeping failed: %s", exc)

    async def ping(self) -> None:
        """A write, not a read: a file that turned read-only or a full disk must fail readiness."""
        await self._run(lambda db: _first_seen(db, PING_MARK, 0.0))

    # --- the durable queue ----------------------------------------------------------------------
    async def admit(self, admission: Admission) -> Verdict:
        """One transaction: the dedupe mark and the queue row land together or not at all."""
        window = FixedWindow.at(time.time(), admission.rate_window_s)
        check = admission.budget
        if check is not None and not self._any_runtime_budget and not check.any_limit:
            admission = dataclasses.replace(admission, budget=None)  # nothing could refuse it
        return await self._write(lambda db: _admit(db, admission, window))

    async def claim(self, session_key: str, lease_s: float, max_turns: int) -> Claim | None:
        """The queue and the session in one read; the lease is taken only once there is something."""
        if self._leases.held(session_key):
            return None
        read = await self._run(lambda db: _queued_and_session(db, session_key, max_turns))
        if read is None:
            return None
        fence = self._leases.take(session_key)
        if fence is None:  # another task took it while this one read
            return None
        return Claim(fence, *read)

    async def renew(self, session_key: str, fence: int, lease_s: float) -> bool:
        return self._leases.holds(session_key, fence)

    async def finish(self, session_key: str, fence: int, result: TurnResult) -> int:
        """Turns, queue and usage in one transaction; ``last_active`` is the newest turn's
        ``created_at``, stamped by the engine's clock, which also measures idle time."""
        self._leases.check(session_key, fence)
        expires_at = time.time() + result.ttl_s
        still_queued = await self._write(lambda db: _finish(db, session_key, result, expires_at))
        self._leases.release(session_key, fence)
        return still_queued

    async def release(self, session_key: str, fence: int) -> None:
        self._leases.release(session_key, fence)

    async def orphans(self, older_than_s: float, limit: int) -> list[str]:
        cutoff = time.time() - older_than_s
        rows = await self._run(
            lambda db: db.execute(
                "SELECT session_key FROM queue GROUP BY session_key HAVING MIN(queued_at) <= ?"
                " ORDER BY MIN(seq) LIMIT ?",
                (cutoff, max(limit, 0) + len(self._leases)),
            ).fetchall()
        )
        return [key for (key,) in rows if not self._leases.held(key)][: max(limit, 0)]

    # --- marks ----------------------------------------------------------------------------------
    async def mark_once(self, key: str, ttl_s: float) -> bool:
        return await self._write(lambda db: _first_seen(db, key, ttl_s))

    # --- sessions -------------------------------------------------------------------------------
    async def load_session(self, session_key: str, max_turns: int) -> SessionState | None:
        """Reads the newest turns backwards on the (session_key, seq) index: the cost does not grow
        with the length of the history."""
        return await self._run(lambda db: _load_session(db, session_key, max_turns))

    async def clear_session(self, session_key: str) -> bool:
        return await self._write(lambda db: _clear_session(db, session_key))

    async def list_sessions(self) -> list[SessionInfo]:
        """Most recently active first."""
        rows = await self._run(
            lambda db: db.execute(
                "SELECT key, last_active, turn_count FROM sessions WHERE turn_count > 0 ORDER BY last_active DESC"
            ).fetchall()
        )
        return [SessionInfo(key, last_active, turn_count) for key, last_active, turn_count in rows]

    # --- runtime access lists -------------------------------------------------------------------
    async def set_access(self, identity: str, decision: AccessDecision) -> None:
        await self._write(
            lambda db: db.execute(
                "INSERT INTO access (identity, decision) VALUES (?, ?)"
                " ON CONFLICT (identity) DO UPDATE SET decision = excluded.decision",
                (identity, decision.value),
            )
        )

    # --- usage ----------------------------------------------------------------------------------
    async def usage_by_day(self, days: int, subject: str = ALL_SUBJECTS) -> list[UsageTotals]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT day, messages, prompt_tokens, completion_tokens, errors FROM usage"
                " WHERE subject = ? ORDER BY day DESC LIMIT ?",
                (subject, max(days, 0)),
            ).fetchall()
        )
        return [UsageTotals(*row) for row in rows]

    async def usage_by_model(self, period: str, subject: str = ALL_SUBJECTS) -> list[ModelUsage]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT model, messages, prompt_tokens, completion_tokens, errors FROM model_usage"
                " WHERE subject = ? AND period = ? ORDER BY model",
                (subject, period),
            ).fetchall()
        )
        return [ModelUsage(*row) for row in rows]

    # --- per-chat and per-user settings, runtime budgets ------------------------------------------
    async def turn_settings(self, chat_id: str, user_id: str) -> TurnSettings:
        return await self._run(lambda db: _turn_settings(db, chat_id, user_id))

    async def set_chat_setting(self, chat_id: str, setting: ChatSetting, value: str) -> None:
        await self._write(
            lambda db: db.execute(
                "INSERT INTO chat_settings (chat_id, setting, value) VALUES (?, ?, ?)"
                " ON CONFLICT (chat_id, setting) DO UPDATE SET value = excluded.value",
                (chat_id, setting.value, value),
            )
        )

    async def set_instructions(self, user_id: str, text: str) -> None:
        if not text:
            await self._write(lambda db: db.execute("DELETE FROM instructions WHERE user_id = ?", (user_id,)))
            return
        await self._write(
            lambda db: db.execute(
                "INSERT INTO instructions (user_id, text) VALUES (?, ?)"
                " ON CONFLICT (user_id) DO UPDATE SET text = excluded.text",
                (user_id, text),
            )
        )

    async def set_budget(self, identity: str, tokens_per_day: int | None) -> None:
        if tokens_per_day is None:
            await self._write(lambda db: db.execute("DELETE FROM budgets WHERE identity = ?", (identity,)))
        else:
            await self._write(
                lambda db: db.execute(
                    "INSERT INTO budgets (identity, tokens) VALUES (?, ?)"
                    " ON CONFLICT (identity) DO UPDATE SET tokens = excluded.tokens",
                    (identity, tokens_per_day),
                )
            )
        await self._note_runtime_budgets()

    async def _note_runtime_budgets(self) -> None:
        row = await self._run(lambda db: db.execute("SELECT EXISTS (SELECT 1 FROM budgets)").fetchone())
        self._any_runtime_budget = bool(row[0])

    async def budgets(self, identities: Sequence[str]) -> dict[str, int]:
        return await self._run(lambda db: _budgets(db, identities))

    # --- plumbing -------------------------------------------------------------------------------
    async def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` on the event loop's thread, or on the worker when the file is locked or
        earlier calls are still queued there (so calls never overtake each other).

        A locked file makes the attempt on the loop fail with ``SQLITE_BUSY`` and the worker run
        ``work`` again, so every ``work`` is one statement or one transaction: a failed attempt
        leaves nothing done."""
        db = self._db
        if db is None:
            raise StoreUnavailable(f"sqlite store {self._path} is not open")
        if self._in_worker_calls == 0:
            try:
                return work(db)
            except sqlite3.Error as exc:
                if not _locked(exc):
                    raise StoreUnavailable(f"sqlite store {self._path}: {exc}") from exc
        return await self._in_worker(work)

    async def _write(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Like ``_run``, sweeping expired rows first, on the worker, when a sweep is due. Only writes
        sweep: reading a session must never delete it, since the engine decides when a session is idle."""
        self._writes += 1
        if self._writes % CHECKPOINT_EVERY_WRITES == 0 and self._checkpoint is None:
            self._checkpoint = asyncio.ensure_future(self._checkpoint_in_worker())
        now = time.time()
        if not self._prune.due(now):
            return await self._run(work)

        def sweep_then_work(db: sqlite3.Connection) -> _T:
            _sweep(db, now)
            return work(db)

        return await self._in_worker(sweep_then_work)

    async def _in_worker(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        worker, db = self._worker, self._worker_db
        if worker is None or db is None:
            raise StoreUnavailable(f"sqlite store {self._path} is not open")
        self._in_worker_calls += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(worker, work, db)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite store {self._path}: {exc}") from exc
        finally:
            self._in_worker_calls -= 1

    async def _checkpoint_in_worker(self) -> None:
        """Copy the WAL into the file without blocking anyone (``PASSIVE``); a failure only means the
        WAL grows until the next one."""
        worker, db = self._worker, self._worker_db
        try:
            if worker is not None and db is not None:
                await asyncio.get_running_loop().run_in_executor(worker, _checkpoint, db)
        except sqlite3.Error as exc:
            log.warning("sqlite checkpoint failed: %s", exc)
        finally:
            self._checkpoint = None

    def _connect_worker(self) -> sqlite3.Connection:
        """Runs on the worker thread: the first connection turns WAL on and creates the schema."""
        db = _connect(self._path, busy_timeout_ms=BUSY_TIMEOUT_MS)
        try:
            # Only takes effect on a new file, before its first table: freed pages can then be
            # given back (``_sweep_and_shrink``); an older file keeps reusing them instead.
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            db.execute("PRAGMA journal_mode = WAL")
            db.executescript(_SCHEMA)
            _add_steps_column(db)
        except BaseException:
            db.close()
            raise
        return db


def _add_steps_column(db: sqlite3.Connection) -> None:
    """A file made before tools has no ``steps`` column: it is added (empty for the old turns)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(turns)")}
    if "steps" not in columns:
        db.execute("ALTER TABLE turns ADD COLUMN steps TEXT")


def _connect(path: str, *, busy_timeout_ms: int) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
    except BaseException:
        db.close()
        raise
    return db


def _locked(error: sqlite3.Error) -> bool:
    """``SQLITE_BUSY`` (any of its extended codes): another connection holds the lock."""
    return isinstance(error, sqlite3.OperationalError) and error.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY


def _checkpoint(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def _sweep(db: sqlite3.Connection, now: float) -> None:
    with _immediate(db):
        for statement in _PRUNE:
            db.execute(statement, {"now": now})


def _sweep_and_shrink(db: sqlite3.Connection, now: float) -> None:
    _sweep(db, now)
    db.execute("PRAGMA incremental_vacuum").fetchall()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def _lock(path: str) -> IO[str]:
    """Hold ``<path>.lock`` exclusively for as long as the returned file is open."""
    lock_path = f"{path}.lock"
    try:
        lock_file = open(lock_path, "a+")  # noqa: SIM115 - held open for the store's lifetime
    except OSError as exc:
        raise StoreUnavailable(f"cannot open sqlite store {path}: {exc}") from exc
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock_file.seek(0)
        holder = lock_file.read().strip() or "another process"
        lock_file.close()
        raise StoreInUse(
            f"store.sqlite_path: {path} is in use by chatbridge process {holder}; the sqlite store serves one"
            " process, so run one, or use store.backend: redis to run several"
        ) from None
    lock_file.seek(0)
    lock_file.truncate()
    lock_file.write(str(os.getpid()))
    lock_file.flush()
    return lock_file


@contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[None]:
    """All or nothing; ``IMMEDIATE`` takes the write lock up front, so a second process cannot make
    the transaction fail halfway with ``SQLITE_BUSY``."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _first_seen(db: sqlite3.Connection, key: str, ttl_s: float) -> bool:
    now = time.time()
    return db.execute(_FIRST_SEEN, {"key": key, "expires_at": now + ttl_s, "now": now}).fetchone() is not None


def _admit(db: sqlite3.Connection, admission: Admission, window: FixedWindow) -> Verdict:
    """One transaction, as ``_run`` needs: the mark must not be set by an attempt that then fails
    and is run again on the worker, which would find the message already seen."""
    with _immediate(db):
        if not _first_seen(db, admission.dedupe_key, admission.dedupe_ttl_s):
            return Verdict.DUPLICATE
        if not admission.allowed(_access(db)):
            return Verdict.DENIED
        if admission.rate_limit > 0:
            params = {"key": admission.rate_key, "index": window.index, "ends_at": window.ends_at}
            if db.execute(_COUNT_HIT, params).fetchone()[0] > admission.rate_limit:
                return Verdict.RATE_LIMITED
        if admission.budget is not None:
            spent = _spent(db, admission.budget)
            if spent is not None:
                return spent
        if admission.item is None:
            return Verdict.ACCEPTED
        db.execute(
            "INSERT INTO queue (session_key, queued_at, message) VALUES (?, ?, ?)",
            (admission.session_key, time.time(), queued_to_json(admission.item)),
        )
        return Verdict.QUEUED


def _spent(db: sqlite3.Connection, check: BudgetCheck) -> Verdict | None:
    used = dict(db.execute(_TOKENS_USED, (check.day, check.user_id, check.chat_id, ALL_SUBJECTS)).fetchall())
    return budget_verdict(check, used, _budgets(db, (check.user_id, check.chat_id)))


def _budgets(db: sqlite3.Connection, identities: Sequence[str]) -> dict[str, int]:
    if not identities:
        return {}
    marks = ", ".join("?" * len(identities))
    rows = db.execute(f"SELECT identity, tokens FROM budgets WHERE identity IN ({marks})", tuple(identities))
    return dict(rows.fetchall())


def _turn_settings(db: sqlite3.Connection, chat_id: str, user_id: str) -> TurnSettings:
    chosen = dict(db.execute("SELECT setting, value FROM chat_settings WHERE chat_id = ?", (chat_id,)).fetchall())
    row = db.execute("SELECT text FROM instructions WHERE user_id = ?", (user_id,)).fetchone()
    return TurnSettings(chosen.get("model"), chosen.get("persona"), row[0] if row else "")


def _access(db: sqlite3.Connection) -> dict[str, AccessDecision]:
    rows = db.execute("SELECT identity, decision FROM access").fetchall()
    return {identity: AccessDecision(decision) for identity, decision in rows}


def _load_session(db: sqlite3.Connection, session_key: str, max_turns: int) -> SessionState | None:
    head = db.execute("SELECT last_active FROM sessions WHERE key = ?", (session_key,)).fetchone()
    if head is None:
        return None
    rows = db.execute(
        "SELECT seq, role, content, tokens, created_at, steps FROM turns WHERE session_key = ? ORDER BY seq DESC LIMIT ?",
        (session_key, max(max_turns, 0)),
    ).fetchall()
    images = _images(db, session_key, rows[-1][0]) if rows else {}
    turns = [
        Turn(
            cast(Role, role),
            content,
            tokens,
            created_at,
            images=images.get(seq, ()),
            steps=tuple(json.loads(steps)) if steps else (),
        )
        for seq, role, content, tokens, created_at, steps in rows
    ]
    turns.reverse()
    return SessionState(session_key, turns, head[0])


def _images(db: sqlite3.Connection, session_key: str, from_seq: int) -> dict[int, tuple[StoredImage, ...]]:
    """The pictures of a session's turns from ``from_seq`` on, by turn."""
    rows = db.execute(
        "SELECT seq, mime_type, data, tokens FROM turn_images WHERE session_key = ? AND seq >= ? ORDER BY seq, idx",
        (session_key, from_seq),
    ).fetchall()
    found: dict[int, list[StoredImage]] = {}
    for seq, mime_type, data, tokens in rows:
        found.setdefault(seq, []).append(StoredImage(mime_type, bytes(data), tokens))
    return {seq: tuple(images) for seq, images in found.items()}


def _queued_and_session(
    db: sqlite3.Connection, session_key: str, max_turns: int
) -> tuple[list[QueuedMessage], SessionState | None, TurnSettings] | None:
    """None when nothing is queued; reads are consistent without a transaction, since this
    process is the file's only writer and every call runs whole."""
    rows = db.execute("SELECT message FROM queue WHERE session_key = ? ORDER BY seq", (session_key,)).fetchall()
    if not rows:
        return None
    queued = [queued_from_json(message) for (message,) in rows]
    settings = _turn_settings(db, queued[-1].chat_id, queued[-1].user_id)
    return queued, _load_session(db, session_key, max_turns), settings


def _finish(db: sqlite3.Connection, session_key: str, result: TurnResult, expires_at: float) -> int:
    with _immediate(db):
        if result.turns:
            _append_turns(db, session_key, result.turns, expires_at)
        if result.answered > 0:
            db.execute(
                "DELETE FROM queue WHERE seq IN (SELECT seq FROM queue WHERE session_key = ? ORDER BY seq LIMIT ?)",
                (session_key, result.answered),
            )
        if result.usage is not None:
            _add_usage(db, result.usage)
        still_queued: int = db.execute("SELECT COUNT(*) FROM queue WHERE session_key = ?", (session_key,)).fetchone()[0]
        return still_queued


def _steps_json(turn: Turn) -> str | None:
    return json.dumps(turn.steps, ensure_ascii=False, separators=(",", ":")) if turn.steps else None


def _append_turns(db: sqlite3.Connection, session_key: str, turns: Sequence[Turn], expires_at: float) -> None:
    first_seq: int = db.execute(
        "SELECT COALESCE(MAX(seq), -1) + 1 FROM turns WHERE session_key = ?", (session_key,)
    ).fetchone()[0]
    db.executemany(
        _INSERT_TURN,
        [
            (session_key, first_seq + i, turn.role, turn.content, turn.tokens, turn.created_at, _steps_json(turn))
            for i, turn in enumerate(turns)
        ],
    )
    db.executemany(
        "INSERT INTO turn_images (session_key, seq, idx, mime_type, data, tokens) VALUES (?, ?, ?, ?, ?, ?)",
        [
            (session_key, first_seq + i, idx, image.mime_type, image.data, image.tokens)
            for i, turn in enumerate(turns)
            for idx, image in enumerate(turn.images)
        ],
    )
    db.execute(_TOUCH_SESSION, (session_key, turns[-1].created_at, expires_at, len(turns)))


def _add_usage(db: sqlite3.Connection, delta: UsageDelta) -> None:
    """One statement for all subjects, so a crash never leaves the totals disagreeing."""
    subjects = usage_subjects(delta)
    figures = (delta.messages, delta.prompt_tokens, delta.completion_tokens, delta.errors)
    params = [value for subject in subjects for value in (subject, delta.day, *figures)]
    db.execute(_ADD_USAGE.format(rows=", ".join([_ADD_USAGE_ROW] * len(subjects))), params)
    if delta.model:
        rows = [(subject, period) for subject in subjects for period in usage_periods(delta)]
        params = [value for subject, period in rows for value in (subject, period, delta.model, *figures)]
        db.execute(_ADD_MODEL_USAGE.format(rows=", ".join([_ADD_MODEL_USAGE_ROW] * len(rows))), params)


def _clear_session(db: sqlite3.Connection, session_key: str) -> bool:
    with _immediate(db):
        db.execute("DELETE FROM turns WHERE session_key = ?", (session_key,))
        db.execute("DELETE FROM turn_images WHERE session_key = ?", (session_key,))
        return db.execute("DELETE FROM sessions WHERE key = ?", (session_key,)).rowcount > 0
