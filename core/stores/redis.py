"""The redis store: any number of bridge processes share one Redis and behave as one bridge.

Everything that must be shared lives in Redis, and every key carries an expiry or is bounded:

=========================================  ==========  =====================================================
key (after ``store.redis_key_prefix``)      type        bound
=========================================  ==========  =====================================================
``session:{K}:turns``                       list        expires ``session.timeout_s`` after the last commit
``session:{K}:meta``                        hash        ``last_active``, ``turn_count``, ``gen``; same expiry as turns
``session:{K}:pending``                     list        messages waiting for the lease; ``PENDING_TTL_S``
``session:{K}:lease``                       string      the holder's fencing token; expires after the lease ttl
``session:{K}:fence``                       string      the session's last token; ``FENCE_TTL_S``
``sessions``                                zset        session keys by expiry; trimmed on every commit
``seen:<key>``                              string      dedupe mark, ``SET NX PX``
``rate:<key>:<window>``                     string      hit counter, expires at the window's end
``access``                                  hash        runtime allow/deny decisions (one field per identity, and ``#version``)
``usage:{usage}:<day>``                     hash        ``m|p|c|e:<subject>`` counters; ``USAGE_TTL_S``
``usage:{usage}:days``                      zset        days with usage, at most ``USAGE_DAYS_KEPT``
=========================================  ==========  =====================================================

``K`` is the session key in a hash tag, so all keys of one session sit in one Cluster slot and each
Lua script touches one slot only; the usage keys share the ``{usage}`` tag for the same reason.

Per-session ordering across processes is a lease: ``session:{K}:lease`` set with ``PX`` to a fencing
token. Tokens come from ``max(last token + 1, Redis server time in ms)``, so they keep increasing even
after the counter expired or Redis restarted empty. ``commit_turns`` appends the turns in one script
that first checks that the lease still holds the caller's token: a holder whose lease expired (it
hung, it was paused, Redis lost the key) cannot overwrite what a newer holder wrote. Waiting for the
lease is a local FIFO queue per session (``LocalOrdering``), so only one task per process polls Redis
for a busy session, with a short exponential backoff capped by the lease's remaining time.

Round trips: every store method is one round trip (one command, one Lua script or one pipeline),
except ``list_sessions`` and ``usage_by_day`` (admin commands, two each). The combined methods
(``first_seen_with_access``, ``hold_for_turn``, ``finish_turn`` and above all ``admit``) exist so
that an answered prompt costs one round trip before the model is called and one after the reply;
see the README ("Running several processes").

Redis errors and timeouts surface as ``StoreUnavailable``; the client reconnects by itself when
Redis is back. Scripts are loaded on ``open`` and reloaded transparently (``NOSCRIPT``) after a
Redis restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from core.store import (
    ALL_SUBJECTS,
    AccessDecision,
    Admission,
    Admitted,
    HeldSession,
    PendingMessage,
    SessionInfo,
    SessionState,
    StaleLease,
    StoreUnavailable,
    Turn,
    UsageDelta,
    UsageTotals,
    Verdict,
)
from core.stores import (
    FixedWindow,
    admit_in_steps,
    finish_turn_in_steps,
    usage_subjects,
)
from core.stores.local_ordering import LocalOrdering
from core.stores.redis_windows import WindowCache

log = logging.getLogger("chatbridge.store.redis")

SOCKET_TIMEOUT_S = 5.0
"""A command that gets no answer for this long fails with ``StoreUnavailable`` (Redis hung)."""
CONNECT_TIMEOUT_S = 2.0
HEALTH_CHECK_INTERVAL_S = 30
"""A pooled connection idle for longer is PINGed before use, so a dead one is replaced quietly."""
PENDING_TTL_S = 24 * 3600
"""Queued messages outlive any lease; the next holder of the session takes them."""
FENCE_TTL_S = 30 * 24 * 3600
"""The token counter's idle expiry; tokens stay increasing after it thanks to the time floor."""
USAGE_TTL_S = 400 * 24 * 3600
USAGE_DAYS_KEPT = 400
POLL_FIRST_S = 0.002
POLL_MAX_S = 0.05
"""Waiting for a lease held elsewhere: retry after 2 ms, doubling up to 50 ms (with jitter)."""
RATE_KEY_SLACK_MS = 1000
TURN_CHUNK = 1000
"""Turns appended per ``RPUSH`` inside the commit script (Lua's ``unpack`` has a stack limit)."""

ACCESS_VERSION = "#version"
"""A field of the ``access`` hash that every ``set_access`` bumps (no identity looks like it):
``admit`` checks it to know that the decisions this process last read are still current."""
_USAGE_FIELDS = ("m", "p", "c", "e")
"""messages, prompt_tokens, completion_tokens, errors."""


class _Script:
    """A Lua script, sent by its SHA1 (``EVALSHA``) and by body only when Redis lost it."""

    __slots__ = ("body", "sha")

    def __init__(self, body: str) -> None:
        self.body = body
        self.sha = hashlib.sha1(body.encode()).hexdigest()


_ENQUEUE = _Script(
    """
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
)

# KEYS: dedupe mark, access hash. ARGV: mark ttl ms. Returns {1 when the mark is new, else 0, field/value pairs}.
_FIRST_SEEN_WITH_ACCESS = _Script(
    """
local first = redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1])
return {first and 1 or 0, redis.call('HGETALL', KEYS[2])}
"""
)

# The end of both scripts that take a session's lease: queue ``item`` when there is one, take the
# lease unless told not to, then take the queue and load the newest ``take`` turns (none when take < 0),
# or only those after ``known_count`` when the session is still the ``known_gen`` this process has a
# window of (redis_windows.py). Returns {2} when told not to try the lease, {0, remaining ms of the
# current lease} when it is taken; when acquired, {1, token} without taking, else {1, token, items}
# (no session) or {1, token, items, last_active, gen, turn_count, position of the first turn sent,
# turns}, with items empty when nothing was pending and the turns as one string, their JSON joined by
# commas.
_LEASE_AND_TAKE = """
if item then
  redis.call('RPUSH', pending, item)
  redis.call('EXPIRE', pending, pending_ttl)
end
if not try_lease then return {2} end
local held = redis.call('PTTL', lease)
if held ~= -2 then return {0, held} end
local now = redis.call('TIME')
local floor = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local last = tonumber(redis.call('GET', fence) or '0')
local token = string.format('%d', math.max(last + 1, floor))
redis.call('SET', fence, token, 'EX', fence_ttl)
redis.call('SET', lease, token, 'PX', lease_ms)
if take < 0 then return {1, token} end
local items = redis.call('LRANGE', pending, 0, -1)
if #items == 0 then return {1, token, {}} end
redis.call('DEL', pending)
local m = redis.call('HMGET', meta, 'last_active', 'gen', 'turn_count')
if not m[1] then return {1, token, items} end
local count = tonumber(m[3] or '0')
local from = math.max(count - take, 0)
if m[2] and m[2] == known_gen and known_count <= count and known_count >= from then from = known_count end
local window = ''
if from < count then window = table.concat(redis.call('LRANGE', turns, from, -1), ',') end
return {1, token, items, m[1], m[2] or '', count, from, window}
"""

_SESSION_LOCALS = """
local lease, fence, pending, turns, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local lease_ms, fence_ttl, pending_ttl, take = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local known_gen, known_count = ARGV[5], tonumber(ARGV[6])
"""

# KEYS: lease, fence counter, pending, turns, meta. ARGV: lease ttl ms, counter ttl s, pending ttl s,
# turns to take, known gen, known turn count[, item to queue].
_ACQUIRE = _Script(_SESSION_LOCALS + "local item, try_lease = ARGV[7], true" + _LEASE_AND_TAKE)

# A new prompt's checks, then what _ACQUIRE does. KEYS: those of _ACQUIRE, then the dedupe mark,
# the access hash and the rate counter. ARGV: those of _ACQUIRE with the item, then 1 to try the
# lease, the access version the caller decided with, 1 when it found the prompt allowed, the mark's
# ttl ms, the rate limit (0: none) and when the rate counter expires (ms since the epoch).
# Returns {'stale', the access hash} when the decisions changed since (nothing else is done),
# {'duplicate'}, {'denied'} or {'rate_limited'}, or what _LEASE_AND_TAKE returns.
_ADMIT = _Script(
    _SESSION_LOCALS
    + """
local item, try_lease = ARGV[7], ARGV[8] == '1'
if (redis.call('HGET', KEYS[7], '#version') or '0') ~= ARGV[9] then  -- ACCESS_VERSION
  return {'stale', redis.call('HGETALL', KEYS[7])}
end
if not redis.call('SET', KEYS[6], '1', 'NX', 'PX', ARGV[11]) then return {'duplicate'} end
if ARGV[10] ~= '1' then return {'denied'} end
local limit = tonumber(ARGV[12])
if limit > 0 then
  local hits = redis.call('INCR', KEYS[8])
  if hits == 1 then redis.call('PEXPIREAT', KEYS[8], ARGV[13]) end
  if hits > limit then return {'rate_limited'} end
end
"""
    + _LEASE_AND_TAKE
)

# KEYS: pending, lease. ARGV: token, pending ttl s, items taken (oldest first).
# For a holder that stopped waiting while its acquisition ran: the items go back to the head of the
# queue in their order, then the lease is released.
_GIVE_BACK = _Script(
    """
for i = #ARGV, 3, -1 do redis.call('LPUSH', KEYS[1], ARGV[i]) end
if #ARGV >= 3 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if redis.call('GET', KEYS[2]) == ARGV[1] then return redis.call('DEL', KEYS[2]) end
return 0
"""
)

_RELEASE = _Script(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
)

# The start of both commit scripts: check the fence, then append ARGV[turns_from..] as turns.
# KEYS: lease, turns, meta. ARGV: fence, ttl ms, last_active, chunk size. Returns 0 for a stale
# fence; otherwise ``committed`` is 1 for no turns, else {1, the session's gen, its turn count}.
_APPEND_TURNS = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local n = #ARGV - turns_from + 1
local committed = 1
if n > 0 then
  local chunk = tonumber(ARGV[4])
  for first = turns_from, #ARGV, chunk do
    redis.call('RPUSH', KEYS[2], unpack(ARGV, first, math.min(first + chunk - 1, #ARGV)))
  end
  redis.call('HSETNX', KEYS[3], 'gen', ARGV[1])
  redis.call('HSET', KEYS[3], 'last_active', ARGV[3])
  local count = redis.call('HINCRBY', KEYS[3], 'turn_count', n)
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  redis.call('PEXPIRE', KEYS[3], ARGV[2])
  committed = {1, redis.call('HGET', KEYS[3], 'gen'), count}
end
"""

# KEYS: lease, turns, meta. ARGV: fence, ttl ms, last_active, chunk size, turns...
_COMMIT = _Script("local turns_from = 5" + _APPEND_TURNS + "return committed")

# KEYS: turns, meta. ARGV: how many of the newest turns. Returns nil or {last_active, turns joined by commas}.
_LOAD = _Script(
    """
local last = redis.call('HGET', KEYS[2], 'last_active')
if not last then return false end
local n = tonumber(ARGV[1])
if n <= 0 then return {last, ''} end
return {last, table.concat(redis.call('LRANGE', KEYS[1], -n, -1), ',')}
"""
)

_COUNT_HIT = _Script(
    """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIREAT', KEYS[1], ARGV[1]) end
return n
"""
)

# Adds the field/increment pairs ARGV[pairs_from..pairs_to] to the day's usage hash and records the
# day in the index of days, which keeps the newest ``days_kept``.
_ADD_TO_USAGE = """
for i = pairs_from, pairs_to, 2 do redis.call('HINCRBY', usage_day, ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', usage_day, usage_ttl)
redis.call('ZADD', usage_days, 0, day)
redis.call('ZREMRANGEBYRANK', usage_days, 0, -(tonumber(days_kept) + 1))
redis.call('EXPIRE', usage_days, usage_ttl)
"""

# KEYS: the day's hash, the days index. ARGV: day, ttl s, days kept, then field/increment pairs.
_ADD_USAGE = _Script(
    "local usage_day, usage_days, day, usage_ttl, days_kept = KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3]\n"
    "local pairs_from, pairs_to = 4, #ARGV" + _ADD_TO_USAGE + "return 1"
)

# The end of a turn: _COMMIT, then the usage counters, then the lease is released.
# KEYS: those of _COMMIT, then those of _ADD_USAGE. ARGV: those of _COMMIT before the turns, then
# those of _ADD_USAGE before the pairs, the number of pair values, the pairs, the turns.
_FINISH = _Script(
    "local usage_day, usage_days, day, usage_ttl, days_kept = KEYS[4], KEYS[5], ARGV[5], ARGV[6], ARGV[7]\n"
    "local pairs_from = 9\n"
    "local pairs_to = pairs_from + tonumber(ARGV[8]) - 1\n"
    "local turns_from = pairs_to + 1" + _APPEND_TURNS + _ADD_TO_USAGE + "redis.call('DEL', KEYS[1])\nreturn committed"
)

_SCRIPTS = (
    _FIRST_SEEN_WITH_ACCESS, _ENQUEUE, _ACQUIRE, _ADMIT, _GIVE_BACK, _RELEASE, _COMMIT, _LOAD, _COUNT_HIT, _ADD_USAGE, _FINISH
)  # fmt: skip


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _turn_to_json(turn: Turn) -> str:
    return json.dumps(
        [turn.role, turn.content, turn.tokens, turn.created_at], ensure_ascii=False, separators=(",", ":")
    )


def _turns_from_json(joined: str) -> list[Turn]:
    """The scripts join the stored turns' JSON with commas: one parse for the whole window is about
    four times cheaper than one per turn, and a window is read for every answered message."""
    return [Turn(role, content, tokens, created_at) for role, content, tokens, created_at in json.loads(f"[{joined}]")]


def _access_from_flat(flat: Sequence[str]) -> tuple[str, dict[str, AccessDecision]]:
    """``HGETALL access`` as a script returns it (field, value, field, value...)."""
    return _access_from_hash(dict(zip(flat[::2], flat[1::2], strict=True)))


def _access_from_hash(raw: dict[str, str]) -> tuple[str, dict[str, AccessDecision]]:
    """The version of the ``access`` hash ("0" before the first change) and its decisions."""
    decisions = {identity: AccessDecision(value) for identity, value in raw.items() if identity != ACCESS_VERSION}
    return raw.get(ACCESS_VERSION, "0"), decisions


def _pending_to_json(item: PendingMessage) -> str:
    return json.dumps(
        [item.message_key, item.user_id, item.text, item.received_at], ensure_ascii=False, separators=(",", ":")
    )


def _pending_from_json(raw: str) -> PendingMessage:
    message_key, user_id, text, received_at = json.loads(raw)
    return PendingMessage(message_key, user_id, text, float(received_at))


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Redis and socket failures become ``StoreUnavailable``, which the engine answers politely."""
    try:
        yield
    except (redis_errors.RedisError, OSError) as exc:
        raise StoreUnavailable(f"redis {what}: {type(exc).__name__}: {exc}") from exc


def connect(url: str, max_connections: int) -> Any:
    """A redis-py asyncio client for ``url``.

    - ``redis://[user:password@]host:port/db``, ``rediss://...`` (TLS), ``unix://...``: one server.
    - ``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]``: the master of
      ``service`` as the sentinels report it, followed across fail-overs.
    - ``redis+cluster://[user:password@]host:port`` (``rediss+cluster://`` for TLS): a Redis Cluster.
    """
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
        # One quick retry on a broken connection (for example the first use of a pooled connection
        # after Redis restarted); timeouts are not retried, because the command may have run.
        "retry": Retry(ExponentialBackoff(cap=0.05, base=0.01), 1, supported_errors=(redis_errors.ConnectionError,)),
    }
    scheme, _, rest = url.partition("://")
    if scheme == "redis+sentinel":
        return _sentinel_client(rest, max_connections, options)
    if scheme in ("redis+cluster", "rediss+cluster"):
        from redis.asyncio.cluster import RedisCluster

        base = scheme.removesuffix("+cluster")
        options.pop("health_check_interval")
        return RedisCluster.from_url(f"{base}://{rest}", max_connections=max_connections, **options)
    pool = BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=SOCKET_TIMEOUT_S, **options)
    return Redis.from_pool(pool)


def _sentinel_client(rest: str, max_connections: int, options: dict[str, Any]) -> Redis:
    from redis.asyncio.sentinel import Sentinel

    parts = urlsplit(f"sentinel://{rest}")
    auth: dict[str, Any] = {}
    if parts.username:
        auth["username"] = unquote(parts.username)
    if parts.password:
        auth["password"] = unquote(parts.password)
    hosts = []
    for address in parts.netloc.rpartition("@")[2].split(","):
        host, _, port = address.rpartition(":")
        hosts.append((host or address, int(port) if host else 26379))
    path = [segment for segment in parts.path.split("/") if segment]
    if not path:
        raise ValueError("a redis+sentinel:// URL names the service: redis+sentinel://host:26379/mymaster")
    db = int(path[1]) if len(path) > 1 else 0
    sentinel_options = {key: options[key] for key in ("socket_timeout", "socket_connect_timeout")}
    sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_options, **options, **auth)
    return cast(Redis, sentinel.master_for(path[0], db=db, max_connections=max_connections))


class RedisStore:
    """A ``Store`` in Redis, shared by every process configured with the same URL and key prefix."""

    def __init__(self, url: str, key_prefix: str = "chatbridge:", max_connections: int = 100) -> None:
        self._url = url
        self._prefix = key_prefix
        self._max_connections = max_connections
        self._client: Any = None
        self._local = LocalOrdering()
        self._cluster = "+cluster://" in url
        self._windows = WindowCache()
        self._access_known: tuple[str, dict[str, AccessDecision]] = ("", {})
        """The runtime access decisions as of a version of the ``access`` hash ("" matches none)."""
        self._released_by_finish: set[tuple[str, int]] = set()
        """Leases (session, token) whose ``finish_turn`` released them, until their holder leaves."""

    # --- keys ---------------------------------------------------------------------------------------
    def _session(self, session_key: str, part: str) -> str:
        return f"{self._prefix}session:{{{session_key}}}:{part}"

    def _session_keys(self, session_key: str) -> list[str]:
        """The keys of the scripts that take a session's lease, in their order."""
        return [self._session(session_key, part) for part in ("lease", "fence", "pending", "turns", "meta")]

    @property
    def _index(self) -> str:
        return f"{self._prefix}sessions"

    # --- lifecycle ------------------------------------------------------------------------------
    async def open(self) -> None:
        """Connects lazily: a Redis that is down at start-up only fails the ``ping`` of ``check``,
        and the bridge serves as soon as it is reachable. Scripts are loaded when Redis answers."""
        if self._client is not None:
            return
        self._client = connect(self._url, self._max_connections)
        try:
            await self._load_scripts()
        except StoreUnavailable as exc:
            log.warning("redis is not reachable yet (%s); will keep trying on every message", exc)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def ping(self) -> None:
        with _translated("ping"):
            await self._redis.ping()

    @property
    def _redis(self) -> Any:
        if self._client is None:
            raise StoreUnavailable("redis store is not open")
        return self._client

    async def _load_scripts(self) -> None:
        with _translated("script load"):
            if self._cluster:
                # Load the slot map before any concurrent use: redis-py's async cluster client
                # breaks connections when many first commands race to discover the topology.
                # Scripts are cached by each node on first use (NOSCRIPT -> EVAL).
                await self._redis.initialize()
                return
            pipe = self._redis.pipeline(transaction=False)
            for script in _SCRIPTS:
                pipe.script_load(script.body)
            await pipe.execute()

    async def _eval(self, script: _Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """One round trip, two only when Redis lost its script cache (a restart)."""
        with _translated("script"):
            try:
                return await self._redis.evalsha(script.sha, len(keys), *keys, *args)
            except redis_errors.NoScriptError:
                return await self._redis.eval(script.body, len(keys), *keys, *args)

    # --- dedupe ---------------------------------------------------------------------------------
    async def first_seen(self, key: str, ttl_s: float) -> bool:
        with _translated("first_seen"):
            return bool(await self._redis.set(f"{self._prefix}seen:{key}", 1, nx=True, px=_ms(ttl_s)))

    async def first_seen_with_access(self, key: str, ttl_s: float) -> tuple[bool, dict[str, AccessDecision]]:
        """One round trip: ``SET NX PX`` and ``HGETALL`` in a script, which redis-py sends more
        cheaply than a pipeline; on a cluster, where the two keys live in different slots, a
        pipeline."""
        mark, access = f"{self._prefix}seen:{key}", f"{self._prefix}access"
        if self._cluster:
            with _translated("first_seen_with_access"):
                pipe = self._redis.pipeline(transaction=False)
                pipe.set(mark, 1, nx=True, px=_ms(ttl_s))
                pipe.hgetall(access)
                first, raw = await pipe.execute()
            return bool(first), _access_from_hash(raw)[1]
        first, flat = await self._eval(_FIRST_SEEN_WITH_ACCESS, [mark, access], [_ms(ttl_s)])
        return bool(first), _access_from_flat(flat)[1]

    # --- per-session ordering -------------------------------------------------------------------
    async def enqueue(self, session_key: str, item: PendingMessage) -> None:
        await self._eval(_ENQUEUE, [self._session(session_key, "pending")], [_pending_to_json(item), PENDING_TTL_S])

    def lease(self, session_key: str, ttl_s: float) -> AbstractAsyncContextManager[int]:
        """Tasks of this process queue locally in arrival order; the first in line polls Redis."""
        return self._lease(session_key, ttl_s)

    @asynccontextmanager
    async def _lease(self, session_key: str, ttl_s: float) -> AsyncIterator[int]:
        async with self._local.lease(session_key):
            token, _ = await self._acquire(session_key, ttl_s)
            try:
                yield token
            finally:
                await self._release(session_key, token)

    def hold_for_turn(
        self,
        session_key: str,
        ttl_s: float,
        item: PendingMessage,
        max_turns: int,
        on_queued: Callable[[], None] | None = None,
    ) -> AbstractAsyncContextManager[HeldSession]:
        """One round trip when the session is free: the ``_ACQUIRE`` script queues ``item``, takes
        the lease, takes the queue and loads the session. When another task of this process is
        already in line, ``item`` is queued at once instead, before waiting, so the current holder
        can take it."""
        return self._hold_for_turn(session_key, ttl_s, item, max(max_turns, 0), on_queued or _nothing)

    @asynccontextmanager
    async def _hold_for_turn(
        self, session_key: str, ttl_s: float, item: PendingMessage, take: int, on_queued: Callable[[], None]
    ) -> AsyncIterator[HeldSession]:
        riding: PendingMessage | None = item
        if self._local.busy(session_key):
            await self.enqueue(session_key, item)
            riding = None
            on_queued()
        async with self._local.lease(session_key):
            token, taken = await self._acquire(
                session_key, ttl_s, riding, on_queued if riding is not None else None, take_turns=take
            )
            async with self._holding(session_key, token, taken, take) as held:
                yield held

    def admit(self, admission: Admission) -> AbstractAsyncContextManager[Admitted]:
        """One round trip for a prompt to a free session: the ``_ADMIT`` script checks, queues, takes
        the lease and loads the session. It also checks that the runtime access decisions the engine
        decided with are current (``ACCESS_VERSION``); when they are not it does nothing else and
        sends the current ones, and the engine decides again. On a cluster, where the keys of one
        prompt live in different slots, the steps are separate calls."""
        if self._cluster:
            return admit_in_steps(self, admission)
        return self._admit(admission)

    @asynccontextmanager
    async def _admit(self, admission: Admission) -> AsyncIterator[Admitted]:
        key = admission.session_key
        on_queued = admission.on_queued or _nothing
        take = max(admission.max_turns, 0)
        # When another task of this process is in line, the prompt is checked and queued at once,
        # before waiting, so the current holder can take it; trying the lease would jump that line.
        first_in_line = not self._local.busy(key)
        if not first_in_line:
            result = await self._run_admission(admission, try_lease=False)
            if isinstance(result[0], str):
                yield Admitted(Verdict(result[0]))
                return
            on_queued()
        async with self._local.lease(key):
            if first_in_line:
                result = await self._run_admission(admission, try_lease=True)
                if isinstance(result[0], str):
                    yield Admitted(Verdict(result[0]))
                    return
                on_queued()
            if result[0] == 1:
                token, taken = int(result[1]), result[2:]
            else:
                token, taken = await self._acquire(key, admission.lease_ttl_s, take_turns=take)
            async with self._holding(key, token, taken, take) as held:
                yield Admitted(Verdict.HELD, held)

    async def _run_admission(self, admission: Admission, *, try_lease: bool) -> list[Any]:
        """The ``_ADMIT`` script, run again after learning the current access decisions when the
        ones this process knew were stale. A verdict comes back as its string."""
        counter, counter_expires_ms = self._rate_counter(admission.rate_key, admission.rate_window_s)
        keys = self._session_keys(admission.session_key) + [
            f"{self._prefix}seen:{admission.dedupe_key}",
            f"{self._prefix}access",
            counter,
        ]
        take = max(admission.max_turns, 0)
        while True:
            version, overrides = self._access_known
            args = [
                _ms(admission.lease_ttl_s), FENCE_TTL_S, PENDING_TTL_S, take, *self._windows.known(admission.session_key, take),
                _pending_to_json(admission.item), int(try_lease), version, int(admission.allowed(overrides)),
                _ms(admission.dedupe_ttl_s), admission.rate_limit, counter_expires_ms,
            ]  # fmt: skip
            result = await self._eval_shielded(_ADMIT, keys, args, admission.session_key)
            if result[0] != "stale":
                return list(result)
            self._access_known = _access_from_flat(result[1])

    async def _acquire(
        self,
        session_key: str,
        ttl_s: float,
        enqueue: PendingMessage | None = None,
        on_queued: Callable[[], None] | None = None,
        take_turns: int = -1,
    ) -> tuple[int, list[Any]]:
        """Take the lease, polling while another holder has it; the first attempt also queues
        ``enqueue``, after which ``on_queued`` is told. With ``take_turns`` >= 0 the attempt that
        gets the lease also takes the queue and loads that many turns; the raw result comes back
        for ``_holding``."""
        keys = self._session_keys(session_key)
        args: list[Any] = [
            _ms(ttl_s),
            FENCE_TTL_S,
            PENDING_TTL_S,
            take_turns,
            *self._windows.known(session_key, take_turns),
        ]
        if enqueue is not None:
            args.append(_pending_to_json(enqueue))
        delay = POLL_FIRST_S
        while True:
            result = await self._eval_shielded(_ACQUIRE, keys, tuple(args), session_key)
            del args[6:]  # the first attempt queues the message; later ones must not
            if on_queued is not None:
                on_queued()
                on_queued = None
            if result[0] == 1:
                return int(result[1]), result[2:]
            remaining_s = int(result[1]) / 1000 if int(result[1]) > 0 else delay
            await asyncio.sleep(min(delay, remaining_s) * random.uniform(0.8, 1.2))
            delay = min(delay * 2, POLL_MAX_S)

    async def _eval_shielded(self, script: _Script, keys: Sequence[str], args: Sequence[Any], session_key: str) -> Any:
        """A script that may take the session's lease and queue: when the caller is cancelled while it
        runs, it still completes in Redis, and whatever it took is given back then."""
        attempt = asyncio.ensure_future(self._eval(script, keys, args))
        try:
            return await asyncio.shield(attempt)
        except asyncio.CancelledError:
            attempt.add_done_callback(lambda done: self._give_back_abandoned(session_key, done))
            raise

    @asynccontextmanager
    async def _holding(self, session_key: str, token: int, taken: list[Any], take: int) -> AsyncIterator[HeldSession]:
        """The session as taken by a script that got the lease; the lease goes back on exit."""
        try:
            waiting = [_pending_from_json(raw) for raw in taken[0]]
            state = None
            if len(taken) > 1:
                _, last_active, gen, count, start, raw_turns = taken
                turns = self._windows.loaded(
                    session_key, take, gen, int(count), int(start), _turns_from_json(raw_turns)
                )
                state = SessionState(session_key, turns, float(last_active))
            elif waiting:
                self._windows.absent(session_key, take)
            yield HeldSession(token, waiting, state)
        finally:
            await self._release(session_key, token)

    def _give_back_abandoned(self, session_key: str, done: asyncio.Future[Any]) -> None:
        if done.cancelled() or done.exception() is not None:
            return
        result = done.result()
        if result[0] == 1:
            items = result[2] if len(result) > 2 else []
            asyncio.ensure_future(self._give_back(session_key, int(result[1]), items))

    async def _give_back(self, session_key: str, token: int, items: list[str]) -> None:
        """Best effort, like ``_release``; queued messages are put back before the lease goes."""
        keys = [self._session(session_key, "pending"), self._session(session_key, "lease")]
        try:
            await self._eval(_GIVE_BACK, keys, [token, PENDING_TTL_S, *items])
        except StoreUnavailable as exc:
            log.warning("could not give back the lease of %s (it expires by itself): %s", session_key, exc)

    async def _release(self, session_key: str, token: int) -> None:
        """Best effort: if Redis is unreachable the lease simply expires after its ttl. Nothing to do
        when ``finish_turn`` released it already."""
        if (session_key, token) in self._released_by_finish:
            self._released_by_finish.discard((session_key, token))
            return
        try:
            await self._eval(_RELEASE, [self._session(session_key, "lease")], [token])
        except StoreUnavailable as exc:
            log.warning("could not release the lease of %s (it expires by itself): %s", session_key, exc)

    async def take_pending(self, session_key: str) -> list[PendingMessage]:
        with _translated("take_pending"):
            raw = await self._redis.lpop(self._session(session_key, "pending"), 2**31 - 1)
        return [_pending_from_json(item) for item in raw or []]

    # --- sessions -------------------------------------------------------------------------------
    async def load_session(self, session_key: str, max_turns: int) -> SessionState | None:
        """``LRANGE -n -1``: the cost does not grow with the length of the history."""
        keys = [self._session(session_key, "turns"), self._session(session_key, "meta")]
        result = await self._eval(_LOAD, keys, [max(max_turns, 0)])
        if not result:
            return None
        last_active, raw_turns = result
        return SessionState(session_key, _turns_from_json(raw_turns), float(last_active))

    async def commit_turns(self, session_key: str, turns: Sequence[Turn], fence: int, ttl_s: float) -> None:
        """Turns, ``last_active`` and ``turn_count`` in one script that checks the fence first; the
        session index is updated in the same round trip (it is only a hint: listing reads the meta).
        Committing no turns only checks the fence."""
        await self._commit(session_key, turns, fence, ttl_s)

    async def finish_turn(
        self, session_key: str, turns: Sequence[Turn], fence: int, ttl_s: float, usage: UsageDelta
    ) -> None:
        """What ``commit_turns`` does, and in the same script the usage counters and the release of
        the lease, which the holder's leaving then skips: one round trip after the reply instead of
        three. On a cluster the usage counters live in another slot, so it takes the steps."""
        if self._cluster:
            await finish_turn_in_steps(self, session_key, turns, fence, ttl_s, usage)
            return
        await self._commit(session_key, turns, fence, ttl_s, usage)
        self._released_by_finish.add((session_key, fence))

    async def _commit(
        self, session_key: str, turns: Sequence[Turn], fence: int, ttl_s: float, usage: UsageDelta | None = None
    ) -> None:
        """``_COMMIT``, or ``_FINISH`` with ``usage``; the window cache follows what landed."""
        try:
            committed = await self._run_commit(session_key, turns, fence, ttl_s, usage)
        except BaseException:
            self._windows.forget(session_key)  # whether the turns landed is unknown
            raise
        if committed == 0:
            self._windows.forget(session_key)
            raise StaleLease(f"lease {fence} on {session_key!r} is no longer held")
        if turns:
            _, gen, count = committed
            self._windows.committed(session_key, turns, gen, int(count))

    async def _run_commit(
        self, session_key: str, turns: Sequence[Turn], fence: int, ttl_s: float, usage: UsageDelta | None
    ) -> Any:
        """What the commit script returned, with the session index updated alongside."""
        keys = [
            self._session(session_key, "lease"),
            self._session(session_key, "turns"),
            self._session(session_key, "meta"),
        ]
        last_active = repr(turns[-1].created_at) if turns else "0"
        args: list[Any] = [fence, _ms(ttl_s), last_active, TURN_CHUNK]
        script = _COMMIT
        if usage is not None:
            usage_keys, (day, ttl, kept, *pairs) = self._usage_call(usage)
            keys += usage_keys
            args += [day, ttl, kept, len(pairs), *pairs]
            script = _FINISH
        args += [_turn_to_json(turn) for turn in turns]
        if not turns:
            ok = await self._eval(script, keys, args)
        elif self._cluster:
            # redis-py refuses scripts in cluster pipelines, and the index lives in another slot:
            # two requests, sent at the same time.
            ok, _ = await asyncio.gather(self._eval(script, keys, args), self._index_session(session_key, ttl_s))
        else:
            with _translated("commit_turns"):
                pipe = self._redis.pipeline(transaction=False)
                pipe.evalsha(script.sha, len(keys), *keys, *args)
                self._index_session(session_key, ttl_s, pipe)
                results = await pipe.execute(raise_on_error=False)
            ok = results[0]
            if isinstance(ok, redis_errors.NoScriptError):
                ok = await self._eval(script, keys, args)
            elif isinstance(ok, Exception):
                with _translated("commit_turns"):
                    raise ok
        return ok

    def _index_session(self, session_key: str, ttl_s: float, pipe: Any = None) -> Any:
        """Add the session to the index (scored by its expiry) and trim expired ones; into ``pipe``,
        or as a pipeline of its own (an awaitable) without one."""
        now_ms = int(time.time() * 1000)
        target = pipe if pipe is not None else self._redis.pipeline(transaction=False)
        target.zadd(self._index, {session_key: now_ms + _ms(ttl_s)})
        target.zremrangebyscore(self._index, "-inf", now_ms)
        if pipe is None:
            return self._run_index(target)
        return None

    @staticmethod
    async def _run_index(pipe: Any) -> None:
        with _translated("session index"):
            await pipe.execute()

    async def clear_session(self, session_key: str) -> bool:
        self._windows.forget(session_key)
        with _translated("clear_session"):
            pipe = self._redis.pipeline(transaction=False)
            pipe.delete(self._session(session_key, "turns"), self._session(session_key, "meta"))
            pipe.zrem(self._index, session_key)
            deleted, _ = await pipe.execute()
        return int(deleted) > 0

    async def list_sessions(self) -> list[SessionInfo]:
        """Most recently active first. Two round trips: the index, then each session's meta."""
        now_ms = int(time.time() * 1000)
        with _translated("list_sessions"):
            pipe = self._redis.pipeline(transaction=False)
            pipe.zremrangebyscore(self._index, "-inf", now_ms)
            pipe.zrange(self._index, 0, -1)
            _, keys = await pipe.execute()
            if not keys:
                return []
            pipe = self._redis.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(self._session(key, "meta"), "last_active", "turn_count")
            metas = await pipe.execute()
        infos = [
            SessionInfo(key, float(last_active), int(turn_count))
            for key, (last_active, turn_count) in zip(keys, metas, strict=True)
            if last_active is not None and turn_count is not None and int(turn_count) > 0
        ]
        return sorted(infos, key=lambda info: info.last_active, reverse=True)

    # --- rate limits ----------------------------------------------------------------------------
    async def count_hit(self, key: str, window_s: float) -> int:
        counter, expire_at_ms = self._rate_counter(key, window_s)
        return int(await self._eval(_COUNT_HIT, [counter], [expire_at_ms]))

    def _rate_counter(self, key: str, window_s: float) -> tuple[str, int]:
        """The current window's counter and when it expires (ms since the epoch). The window comes
        from the shared ``FixedWindow`` rule, so every process (with a synced clock) counts into the
        same key for the same instant, whether through ``count_hit`` or ``admit``."""
        window = FixedWindow.at(time.time(), window_s)
        return f"{self._prefix}rate:{key}:{window.index}", math.ceil(window.ends_at * 1000) + RATE_KEY_SLACK_MS

    # --- runtime access lists -------------------------------------------------------------------
    async def access_overrides(self) -> dict[str, AccessDecision]:
        with _translated("access_overrides"):
            raw = await self._redis.hgetall(f"{self._prefix}access")
        return _access_from_hash(raw)[1]

    async def set_access(self, identity: str, decision: AccessDecision) -> None:
        """The decision and a new ``ACCESS_VERSION`` in one transaction: no process can admit a
        prompt on the old decisions once this returns."""
        with _translated("set_access"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(f"{self._prefix}access", identity, decision.value)
            pipe.hincrby(f"{self._prefix}access", ACCESS_VERSION, 1)
            await pipe.execute()

    # --- usage ----------------------------------------------------------------------------------
    def _usage_day(self, day: str) -> str:
        return f"{self._prefix}usage:{{usage}}:{day}"

    @property
    def _usage_days(self) -> str:
        return f"{self._prefix}usage:{{usage}}:days"

    async def add_usage(self, delta: UsageDelta) -> None:
        """Every subject's counters of the day in one script, so they never disagree."""
        await self._eval(_ADD_USAGE, *self._usage_call(delta))

    def _usage_call(self, delta: UsageDelta) -> tuple[list[str], list[Any]]:
        """The keys and arguments of ``_ADD_USAGE`` for ``delta``: its day, then every subject's
        counter names and increments."""
        figures = (delta.messages, delta.prompt_tokens, delta.completion_tokens, delta.errors)
        pairs = [
            value
            for subject in usage_subjects(delta)
            for name, figure in zip(_USAGE_FIELDS, figures, strict=True)
            for value in (f"{name}:{subject}", figure)
        ]
        return [self._usage_day(delta.day), self._usage_days], [delta.day, USAGE_TTL_S, USAGE_DAYS_KEPT, *pairs]

    async def usage_by_day(self, days: int, subject: str = ALL_SUBJECTS) -> list[UsageTotals]:
        if days <= 0:
            return []
        with _translated("usage_by_day"):
            known = await self._redis.zrevrange(self._usage_days, 0, -1)
            if not known:
                return []
            pipe = self._redis.pipeline(transaction=False)
            for day in known:
                pipe.hmget(self._usage_day(day), *(f"{name}:{subject}" for name in _USAGE_FIELDS))
            rows = await pipe.execute()
        totals = [
            UsageTotals(day, *(int(value or 0) for value in row))
            for day, row in zip(known, rows, strict=True)
            if any(value is not None for value in row)
        ]
        return totals[:days]


def _nothing() -> None:
    """The ``on_queued`` of callers that do not need to know."""
