"""The redis store: any number of bridge processes share one Redis and behave as one bridge.

Everything that must be shared lives in Redis, and every key carries an expiry or is bounded:

=========================================  ==========  =====================================================
key (after ``store.redis_key_prefix``)      type        bound
=========================================  ==========  =====================================================
``session:{K}:turns``                       list        expires ``session.timeout_s`` after the last commit
``session:{K}:meta``                        hash        ``last_active``, ``turn_count``, ``gen``; same expiry as turns
``session:{K}:pending``                     list        the durable queue: unanswered messages; ``PENDING_TTL_S``
``session:{K}:lease``                       string      the holder's fencing token; expires after ``store.lease_s``
``session:{K}:fence``                       string      the session's last token; ``FENCE_TTL_S``
``sessions``                                zset        session keys by expiry; trimmed on every commit
``queued``                                  zset        sessions with a queue, by when it last moved; trimmed by ``orphans``
``seen:<key>``                              string      dedupe mark, ``SET NX PX``
``rate:<key>:<window>``                     string      hit counter, expires at the window's end
``access``                                  hash        runtime allow/deny decisions (one field per identity, and ``#version``)
``usage:{usage}:<day>``                     hash        ``m|p|c|e:<subject>`` counters, and ``m|p|c|e@<model>:<subject>``
                                                        per model; ``USAGE_TTL_S``
``usage:{usage}:days``                      zset        days with usage, at most ``USAGE_DAYS_KEPT``
``usage:{usage}:models``                    set         the models with usage (a handful); ``USAGE_TTL_S``
``usage:{usage}:budgets``                   hash        runtime budgets, identity -> tokens per day
``settings``                                hash        ``model:<chat>``, ``persona:<chat>``, ``instructions:<user>``:
                                                        kept, one field per choice made (they outlive sessions)
=========================================  ==========  =====================================================

``K`` is the session key in a hash tag, so all keys of one session sit in one Cluster slot; the usage
keys and the runtime budgets share the ``{usage}`` tag for the same reason, so that the budget check
reads one slot.

Budgets: ``admit`` reads the day's token counters of the user, the chat and the bridge and their
runtime budgets in the same script that queues the message, so no process admits a message once
``finish`` has counted the tokens that spend a budget. Turns being answered are counted only when they
finish: a budget is overshot by at most the messages in flight. On a Cluster the budget check is a
script of its own on the ``{usage}`` slot, between the rate limit and the queue.

The queue: ``admit`` sets the dedupe mark and appends to ``pending`` in one script, and a message
leaves ``pending`` only in the script that stores the turn answering it (``finish``), so a process
killed in between leaves it queued. The lease is ``session:{K}:lease`` set with ``PX`` to a fencing
token and renewed while a turn runs: a killed holder frees its session within one ``store.lease_s``.
Tokens come from ``max(last token + 1, Redis server time in ms)``, so they keep increasing even after
the counter expired or Redis restarted empty, and ``finish`` first checks that the lease still holds
the caller's token: a holder whose lease lapsed cannot overwrite what a newer holder wrote. Nobody
waits for a lease: ``claim`` of a held session says so at once, and the holder looks at the queue
again when it finishes, so a busy session costs no polling. ``orphans`` finds queues that nobody
holds and have not moved for a while: what a dead process left.

Round trips: ``admit``, ``claim``, ``renew``, ``finish`` and ``release`` are one each (one Lua script,
with the session index sent in the same pipeline), so an answered prompt costs three before the
model is called and one after it; ``claim`` also reads the chat's model and persona and the user's
instructions from the ``settings`` hash for the turn. On a Cluster, where one message's keys live in
several slots, ``admit``, ``claim`` and ``finish`` take a few steps. Redis errors and timeouts surface as ``StoreUnavailable``;
the client reconnects by itself when Redis is back. Scripts are loaded on ``open`` and reloaded
transparently (``NOSCRIPT``) after a Redis restart.
"""

from __future__ import annotations

import asyncio
import base64
import calendar
import hashlib
import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from bots.model import ChatMessage
from core.store import (
    ALL_SUBJECTS,
    AccessDecision,
    Admission,
    BudgetCheck,
    ChatSetting,
    Claim,
    ModelUsage,
    Role,
    SessionInfo,
    SessionState,
    StaleLease,
    StoredImage,
    StoreUnavailable,
    Turn,
    TurnResult,
    TurnSettings,
    UsageDelta,
    UsageTotals,
    Verdict,
)
from core.stores import FixedWindow, queued_from_json, queued_to_json, usage_subjects
from core.stores.redis_windows import WindowCache

log = logging.getLogger("chatbridge.store.redis")

SOCKET_TIMEOUT_S = 5.0
"""A command that gets no answer for this long fails with ``StoreUnavailable`` (Redis hung)."""
CONNECT_TIMEOUT_S = 2.0
HEALTH_CHECK_INTERVAL_S = 30
"""A pooled connection idle for longer is PINGed before use, so a dead one is replaced quietly."""
PENDING_TTL_S = 24 * 3600
"""Queued messages outlive any lease; a message nobody could answer for a day is dropped."""
FENCE_TTL_S = 30 * 24 * 3600
"""The token counter's idle expiry; tokens stay increasing after it thanks to the time floor."""
USAGE_TTL_S = 400 * 24 * 3600
USAGE_DAYS_KEPT = 400
RATE_KEY_SLACK_MS = 1000
TURN_CHUNK = 1000
"""Turns appended per ``RPUSH`` inside the finish script (Lua's ``unpack`` has a stack limit)."""

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


_NOW_MS = """
local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# Which budget is spent (core.stores.budget_verdict, in Lua), or nothing. Needs: usage_day (the
# day's usage hash), budgets (the runtime budgets hash), and ARGV[b], ARGV[b + 1..5]: the user,
# the chat, their configured limits and the bridge's (0: none).
_BUDGET_CHECK = """
local user, chat = ARGV[b], ARGV[b + 1]
local set = redis.call('HMGET', budgets, user, chat)
local used = redis.call('HMGET', usage_day, 'p:' .. user, 'c:' .. user, 'p:' .. chat, 'c:' .. chat, 'p:*', 'c:*')
local function n(value) return tonumber(value or '0') end
local user_limit = tonumber(set[1] or ARGV[b + 2])
if user_limit > 0 and n(used[1]) + n(used[2]) >= user_limit then return {'over_user_budget'} end
local chat_limit = tonumber(set[2] or ARGV[b + 3])
if chat_limit > 0 and n(used[3]) + n(used[4]) >= chat_limit then return {'over_chat_budget'} end
local total_limit = tonumber(ARGV[b + 4])
if total_limit > 0 and n(used[5]) + n(used[6]) >= total_limit then return {'over_total_budget'} end
"""

# A new message's checks, then the queue. KEYS: dedupe mark, access hash, rate counter, pending,
# the queued index, the day's usage hash, the budgets hash. ARGV: the access version the caller
# decided with, 1 when it found the message allowed, the mark's ttl ms, the rate limit (0: none),
# when the rate counter expires (ms since the epoch), the message ('' to only check), the pending
# ttl s, the session key, 1 to check the budgets, then the budget arguments (_BUDGET_CHECK).
# Returns {'stale', the access hash} when the decisions changed since (nothing else is done), or a
# verdict.
_ADMIT = _Script(
    """
if (redis.call('HGET', KEYS[2], '#version') or '0') ~= ARGV[1] then  -- ACCESS_VERSION
  return {'stale', redis.call('HGETALL', KEYS[2])}
end
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[3]) then return {'duplicate'} end
if ARGV[2] ~= '1' then return {'denied'} end
local limit = tonumber(ARGV[4])
if limit > 0 then
  local hits = redis.call('INCR', KEYS[3])
  if hits == 1 then redis.call('PEXPIREAT', KEYS[3], ARGV[5]) end
  if hits > limit then return {'rate_limited'} end
end
if ARGV[9] == '1' then
  local usage_day, budgets, b = KEYS[6], KEYS[7], 10
"""
    + _BUDGET_CHECK
    + """
end
if ARGV[6] == '' then return {'accepted'} end
redis.call('RPUSH', KEYS[4], ARGV[6])
redis.call('EXPIRE', KEYS[4], ARGV[7])
"""
    + _NOW_MS
    + """
redis.call('ZADD', KEYS[5], 'NX', now_ms, ARGV[8])
return {'queued'}
"""
)

# The budget check alone, for a Cluster. KEYS: the day's usage hash, the budgets hash. ARGV: those of
# _BUDGET_CHECK. Returns {'ok'} or a verdict.
_BUDGET = _Script("local usage_day, budgets, b = KEYS[1], KEYS[2], 1" + _BUDGET_CHECK + "return {'ok'}")

# KEYS: pending. ARGV: the message, the pending ttl s.
_ENQUEUE = _Script(
    """
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
)

# KEYS: lease, fence counter, pending, turns, meta, and the settings hash (left out on a Cluster,
# where it sits in another slot). ARGV: lease ttl ms, counter ttl s, turns to take, the gen and turn
# count this process has a window of (redis_windows.py). Returns {0} when the session is held, {2}
# when nothing is queued, else {1, token, items, chosen} (no session) or {1, token, items, chosen,
# last_active, gen, turn_count, position of the first turn sent, turns}, the turns as one string,
# their JSON joined by commas; only those after the known count when the session is still the
# known gen. ``chosen`` is the newest item's chat's model and persona and its user's instructions
# (queued_to_json: the chat is the item's third field, the user its fourth), {} without the hash.
_CLAIM = _Script(
    """
local lease, fence, pending, turns, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local take, known_gen, known_count = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
if redis.call('EXISTS', lease) == 1 then return {0} end
local items = redis.call('LRANGE', pending, 0, -1)
if #items == 0 then return {2} end
"""
    + _NOW_MS
    + """
local last = tonumber(redis.call('GET', fence) or '0')
local token = string.format('%d', math.max(last + 1, now_ms))
redis.call('SET', fence, token, 'EX', ARGV[2])
redis.call('SET', lease, token, 'PX', ARGV[1])
local chosen = {}
if #KEYS >= 6 then
  local newest = cjson.decode(items[#items])
  local chat, user = newest[3], newest[4]
  chosen = redis.call('HMGET', KEYS[6], 'model:' .. chat, 'persona:' .. chat, 'instructions:' .. user)
end
local m = redis.call('HMGET', meta, 'last_active', 'gen', 'turn_count')
if not m[1] then return {1, token, items, chosen} end
local count = tonumber(m[3] or '0')
local from = math.max(count - take, 0)
if m[2] and m[2] == known_gen and known_count <= count and known_count >= from then from = known_count end
local window = ''
if from < count then window = table.concat(redis.call('LRANGE', turns, from, -1), ',') end
return {1, token, items, chosen, m[1], m[2] or '', count, from, window}
"""
)

_RENEW = _Script(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
)

_RELEASE = _Script(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
)

# The session's part of a finished turn: check the fence, append ARGV[turns_from..] as turns, take
# the answered messages off the queue, release the lease. KEYS: lease, turns, meta, pending. ARGV:
# fence, ttl ms, last_active, chunk size, how many messages were answered. Returns 0 for a stale
# fence; otherwise ``committed`` is {how many are still queued} for no turns, else {that, the
# session's gen, its turn count}.
_FINISH_SESSION = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local answered = tonumber(ARGV[5])
if answered > 0 then redis.call('LTRIM', KEYS[4], answered, -1) end
local committed = {redis.call('LLEN', KEYS[4])}
local n = #ARGV - turns_from + 1
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
  committed = {committed[1], redis.call('HGET', KEYS[3], 'gen'), count}
end
redis.call('DEL', KEYS[1])
"""

# Adds the field/increment pairs ARGV[pairs_from..pairs_to] to the day's usage hash, records the
# day in the index of days, which keeps the newest ``days_kept``, and the model ('' for none) in the
# set of models.
_ADD_TO_USAGE = """
for i = pairs_from, pairs_to, 2 do redis.call('HINCRBY', usage_day, ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', usage_day, usage_ttl)
redis.call('ZADD', usage_days, 0, day)
redis.call('ZREMRANGEBYRANK', usage_days, 0, -(tonumber(days_kept) + 1))
redis.call('EXPIRE', usage_days, usage_ttl)
if model ~= '' then
  redis.call('SADD', usage_models, model)
  redis.call('EXPIRE', usage_models, usage_ttl)
end
"""

# The session's part alone, for a Cluster. KEYS, ARGV: those of _FINISH_SESSION, then the turns.
_FINISH_IN_SLOT = _Script("local turns_from = 6" + _FINISH_SESSION + "return committed")

# KEYS: the day's hash, the days index, the models set. ARGV: day, ttl s, days kept, model, then
# field/increment pairs.
_ADD_USAGE = _Script(
    "local usage_day, usage_days, usage_models = KEYS[1], KEYS[2], KEYS[3]\n"
    "local day, usage_ttl, days_kept, model = ARGV[1], ARGV[2], ARGV[3], ARGV[4]\n"
    "local pairs_from, pairs_to = 5, #ARGV" + _ADD_TO_USAGE + "return 1"
)

# A whole finished turn: _FINISH_SESSION, the queued index, then the usage counters (none when the
# number of pair values is 0). KEYS: those of _FINISH_SESSION, the queued index, then those of
# _ADD_USAGE. ARGV: those of _FINISH_SESSION, the session key, then those of _ADD_USAGE before the
# pairs, the number of pair values, the pairs, the turns.
_FINISH = _Script(
    "local usage_day, usage_days, usage_models = KEYS[6], KEYS[7], KEYS[8]\n"
    "local day, usage_ttl, days_kept, model = ARGV[7], ARGV[8], ARGV[9], ARGV[10]\n"
    "local pairs_from = 12\n"
    "local pairs_to = pairs_from + tonumber(ARGV[11]) - 1\n"
    "local turns_from = pairs_to + 1"
    + _FINISH_SESSION
    + _NOW_MS
    + """
if committed[1] == 0 then redis.call('ZREM', KEYS[5], ARGV[6]) else redis.call('ZADD', KEYS[5], now_ms, ARGV[6]) end
if pairs_to >= pairs_from then
"""
    + _ADD_TO_USAGE
    + """
end
return committed
"""
)

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

_SCRIPTS = (_ADMIT, _BUDGET, _ENQUEUE, _CLAIM, _RENEW, _RELEASE, _FINISH_IN_SLOT, _ADD_USAGE, _FINISH, _LOAD)


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _turn_to_json(turn: Turn) -> str:
    """A list: ``steps`` as a fifth entry and the pictures (base64, in the same list entry so they
    expire with the session) as a sixth, each only when needed (turns stored before tools had four)."""
    fields: list[object] = [turn.role, turn.content, turn.tokens, turn.created_at]
    if turn.steps or turn.images:
        fields.append(turn.steps)
    if turn.images:
        fields.append([[i.mime_type, base64.b64encode(i.data).decode("ascii"), i.tokens] for i in turn.images])
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))


def _turns_from_json(joined: str) -> list[Turn]:
    """The scripts join the stored turns' JSON with commas: one parse for the whole window is about
    four times cheaper than one per turn, and a window is read for every answered message."""
    return [_turn(*fields) for fields in json.loads(f"[{joined}]")]


def _turn(
    role: Role,
    content: str,
    tokens: int,
    created_at: float,
    steps: Sequence[ChatMessage] = (),
    images: Sequence[list[Any]] = (),
) -> Turn:
    pictures = tuple(StoredImage(mime, base64.b64decode(data), cost) for mime, data, cost in images)
    return Turn(role, content, tokens, created_at, images=pictures, steps=tuple(steps))


def _budget_args(check: BudgetCheck) -> list[Any]:
    return [check.user_id, check.chat_id, check.user_limit, check.chat_limit, check.total_limit]


def _access_from_flat(flat: Sequence[str]) -> tuple[str, dict[str, AccessDecision]]:
    """``HGETALL access`` as a script returns it (field, value, field, value...)."""
    return _access_from_hash(dict(zip(flat[::2], flat[1::2], strict=True)))


def _access_from_hash(raw: dict[str, str]) -> tuple[str, dict[str, AccessDecision]]:
    """The version of the ``access`` hash ("0" before the first change) and its decisions."""
    decisions = {identity: AccessDecision(value) for identity, value in raw.items() if identity != ACCESS_VERSION}
    return raw.get(ACCESS_VERSION, "0"), decisions


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
        self._cluster = "+cluster://" in url
        self._windows = WindowCache()
        self._access_known: tuple[str, dict[str, AccessDecision]] = ("", {})
        """The runtime access decisions as of a version of the ``access`` hash ("" matches none)."""

    # --- keys ---------------------------------------------------------------------------------------
    def _session(self, session_key: str, part: str) -> str:
        return f"{self._prefix}session:{{{session_key}}}:{part}"

    @property
    def _index(self) -> str:
        return f"{self._prefix}sessions"

    @property
    def _queued(self) -> str:
        return f"{self._prefix}queued"

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
        """A write, not a ``PING``: a Redis out of memory (``maxmemory`` with ``noeviction``) or a
        read-only replica answers a ping but refuses every message."""
        with _translated("ping"):
            await self._redis.set(f"{self._prefix}ping", 1, px=60_000)

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

    # --- the durable queue ----------------------------------------------------------------------
    async def admit(self, admission: Admission) -> Verdict:
        """One script: the checks, then the queue. It also checks that the runtime access decisions
        the engine decided with are current (``ACCESS_VERSION``); when they are not it does nothing
        and sends the current ones, and the engine decides again. On a Cluster the steps are separate
        calls (``_admit_in_steps``)."""
        if self._cluster:
            return await self._admit_in_steps(admission)
        counter, counter_expires_ms = self._rate_counter(admission.rate_key, admission.rate_window_s)
        item = "" if admission.item is None else queued_to_json(admission.item)
        budget = admission.budget
        keys = [
            f"{self._prefix}seen:{admission.dedupe_key}",
            f"{self._prefix}access",
            counter,
            self._session(admission.session_key, "pending"),
            self._queued,
            self._usage_day(budget.day if budget is not None else "-"),
            self._budgets,
        ]
        checks = [0] if budget is None else [1, *_budget_args(budget)]
        while True:
            version, overrides = self._access_known
            args = [
                version, int(admission.allowed(overrides)), _ms(admission.dedupe_ttl_s), admission.rate_limit,
                counter_expires_ms, item, PENDING_TTL_S, admission.session_key, *checks,
            ]  # fmt: skip
            result = await self._eval(_ADMIT, keys, args)
            if result[0] != "stale":
                return Verdict(result[0])
            self._access_known = _access_from_flat(result[1])

    async def _admit_in_steps(self, admission: Admission) -> Verdict:
        """A Cluster keeps one message's keys in several slots, so no script can see them all: the
        mark and the decisions in one pipeline, then the rate counter, then the queue. A crash
        between the mark and the queue leaves a mark without its message, which a redelivery then
        cannot correct; one Redis server or Sentinel has no such gap."""
        with _translated("admit"):
            pipe = self._redis.pipeline(transaction=False)
            pipe.set(f"{self._prefix}seen:{admission.dedupe_key}", 1, nx=True, px=_ms(admission.dedupe_ttl_s))
            pipe.hgetall(f"{self._prefix}access")
            first, raw = await pipe.execute()
            if not first:
                return Verdict.DUPLICATE
            if not admission.allowed(_access_from_hash(raw)[1]):
                return Verdict.DENIED
            if admission.rate_limit > 0:
                counter, expires_ms = self._rate_counter(admission.rate_key, admission.rate_window_s)
                pipe = self._redis.pipeline(transaction=False)
                pipe.incr(counter)
                pipe.pexpireat(counter, expires_ms)
                hits, _ = await pipe.execute()
                if int(hits) > admission.rate_limit:
                    return Verdict.RATE_LIMITED
        if admission.budget is not None:
            keys = [self._usage_day(admission.budget.day), self._budgets]
            spent = await self._eval(_BUDGET, keys, _budget_args(admission.budget))
            if spent[0] != "ok":
                return Verdict(spent[0])
        if admission.item is None:
            return Verdict.ACCEPTED
        pending = self._session(admission.session_key, "pending")
        await self._eval(_ENQUEUE, [pending], [queued_to_json(admission.item), PENDING_TTL_S])
        with _translated("queued index"):
            await self._redis.zadd(self._queued, {admission.session_key: int(time.time() * 1000)}, nx=True)
        return Verdict.QUEUED

    async def claim(self, session_key: str, lease_s: float, max_turns: int) -> Claim | None:
        take = max(max_turns, 0)
        keys = [self._session(session_key, part) for part in ("lease", "fence", "pending", "turns", "meta")]
        if not self._cluster:
            keys.append(self._settings)
        args = [_ms(lease_s), FENCE_TTL_S, take, *self._windows.known(session_key, take)]
        result = await self._eval(_CLAIM, keys, args)
        if result[0] != 1:
            return None
        token, items = int(result[1]), [queued_from_json(raw) for raw in result[2]]
        state = None
        if len(result) > 4:
            _, _, _, _, last_active, gen, count, start, raw_turns = result
            turns = self._windows.loaded(session_key, take, gen, int(count), int(start), _turns_from_json(raw_turns))
            state = SessionState(session_key, turns, float(last_active))
        else:
            self._windows.absent(session_key, take)
        if self._cluster:  # the settings hash is in another slot: a second step
            return Claim(token, items, state, await self.turn_settings(items[-1].chat_id, items[-1].user_id))
        model, persona, instructions = result[3]
        return Claim(token, items, state, TurnSettings(model, persona, instructions or ""))

    async def renew(self, session_key: str, fence: int, lease_s: float) -> bool:
        return bool(await self._eval(_RENEW, [self._session(session_key, "lease")], [fence, _ms(lease_s)]))

    async def finish(self, session_key: str, fence: int, result: TurnResult) -> int:
        """One script, sent in one pipeline with the session index; on a Cluster, where the usage
        and the indexes live in other slots, the session's part first and the rest after it."""
        try:
            committed = await self._run_finish(session_key, fence, result)
        except BaseException:
            self._windows.forget(session_key)  # whether the turns landed is unknown
            raise
        if committed == 0:
            self._windows.forget(session_key)
            raise StaleLease(f"lease {fence} on {session_key!r} is no longer held")
        if result.turns:
            _, gen, count = committed
            self._windows.committed(session_key, result.turns, gen, int(count))
        return int(committed[0])

    async def _run_finish(self, session_key: str, fence: int, result: TurnResult) -> Any:
        keys = [self._session(session_key, part) for part in ("lease", "turns", "meta", "pending")]
        last_active = repr(result.turns[-1].created_at) if result.turns else "0"
        args: list[Any] = [fence, _ms(result.ttl_s), last_active, TURN_CHUNK, result.answered]
        turns = [_turn_to_json(turn) for turn in result.turns]
        if self._cluster:
            committed = await self._eval(_FINISH_IN_SLOT, keys, args + turns)
            if committed == 0:
                return committed
            followers = [self._reindex_queue(session_key, int(committed[0]))]
            if result.usage is not None:
                followers.append(self._eval(_ADD_USAGE, *self._usage_call(result.usage)))
            if result.turns:
                followers.append(self._index_session(session_key, result.ttl_s))
            await asyncio.gather(*followers)
            return committed
        # Without usage the script is sent no pairs and leaves the usage keys alone.
        usage_keys = [self._usage_day("-"), self._usage_days, self._usage_models]
        usage_args, pairs = ["-", 0, 0, ""], list[Any]()
        if result.usage is not None:
            usage_keys, (day, ttl, kept, model, *pairs) = self._usage_call(result.usage)
            usage_args = [day, ttl, kept, model]
        keys += [self._queued, *usage_keys]
        args += [session_key, *usage_args, len(pairs), *pairs, *turns]
        if not result.turns:
            return await self._eval(_FINISH, keys, args)
        with _translated("finish"):
            pipe = self._redis.pipeline(transaction=False)
            pipe.evalsha(_FINISH.sha, len(keys), *keys, *args)
            self._index_session(session_key, result.ttl_s, pipe)
            results = await pipe.execute(raise_on_error=False)
        committed = results[0]
        if isinstance(committed, redis_errors.NoScriptError):
            committed = await self._eval(_FINISH, keys, args)
        elif isinstance(committed, Exception):
            with _translated("finish"):
                raise committed
        return committed

    async def _reindex_queue(self, session_key: str, still_queued: int) -> None:
        with _translated("queued index"):
            if still_queued:
                await self._redis.zadd(self._queued, {session_key: int(time.time() * 1000)})
            else:
                await self._redis.zrem(self._queued, session_key)

    async def release(self, session_key: str, fence: int) -> None:
        """Best effort: if Redis is unreachable the lease lapses after its ttl."""
        try:
            await self._eval(_RELEASE, [self._session(session_key, "lease")], [fence])
        except StoreUnavailable as exc:
            log.warning("could not release the lease of %s (it lapses by itself): %s", session_key, exc)

    async def orphans(self, older_than_s: float, limit: int) -> list[str]:
        """Sessions in the ``queued`` index that have not moved for ``older_than_s`` and have no
        lease; entries whose queue expired are dropped from the index on the way."""
        if limit <= 0:
            return []
        cutoff_ms = int((time.time() - older_than_s) * 1000)
        with _translated("orphans"):
            candidates = await self._redis.zrangebyscore(self._queued, "-inf", cutoff_ms, start=0, num=limit * 4)
            if not candidates:
                return []
            pipe = self._redis.pipeline(transaction=False)
            for key in candidates:
                pipe.exists(self._session(key, "lease"))
                pipe.exists(self._session(key, "pending"))
            flags = await pipe.execute()
            gone = [key for i, key in enumerate(candidates) if not flags[2 * i + 1]]
            if gone:
                await self._redis.zrem(self._queued, *gone)
        free = [key for i, key in enumerate(candidates) if flags[2 * i + 1] and not flags[2 * i]]
        return free[:limit]

    # --- marks ----------------------------------------------------------------------------------
    async def mark_once(self, key: str, ttl_s: float) -> bool:
        with _translated("mark_once"):
            return bool(await self._redis.set(f"{self._prefix}seen:{key}", 1, nx=True, px=_ms(ttl_s)))

    # --- sessions -------------------------------------------------------------------------------
    async def load_session(self, session_key: str, max_turns: int) -> SessionState | None:
        """``LRANGE -n -1``: the cost does not grow with the length of the history."""
        keys = [self._session(session_key, "turns"), self._session(session_key, "meta")]
        result = await self._eval(_LOAD, keys, [max(max_turns, 0)])
        if not result:
            return None
        last_active, raw_turns = result
        return SessionState(session_key, _turns_from_json(raw_turns), float(last_active))

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
    def _rate_counter(self, key: str, window_s: float) -> tuple[str, int]:
        """The current window's counter and when it expires (ms since the epoch). The window comes
        from the shared ``FixedWindow`` rule, so every process (with a synced clock) counts into the
        same key for the same instant."""
        window = FixedWindow.at(time.time(), window_s)
        return f"{self._prefix}rate:{key}:{window.index}", math.ceil(window.ends_at * 1000) + RATE_KEY_SLACK_MS

    # --- runtime access lists -------------------------------------------------------------------
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

    @property
    def _usage_models(self) -> str:
        return f"{self._prefix}usage:{{usage}}:models"

    @property
    def _budgets(self) -> str:
        return f"{self._prefix}usage:{{usage}}:budgets"

    def _usage_call(self, delta: UsageDelta) -> tuple[list[str], list[Any]]:
        """The keys and arguments of ``_ADD_USAGE`` for ``delta``: its day and model, then every
        subject's counter names and increments (and the model's, with a model)."""
        figures = (delta.messages, delta.prompt_tokens, delta.completion_tokens, delta.errors)
        prefixes = ("",) if not delta.model else ("", f"@{delta.model}")
        pairs = [
            value
            for subject in usage_subjects(delta)
            for of_model in prefixes
            for name, figure in zip(_USAGE_FIELDS, figures, strict=True)
            for value in (f"{name}{of_model}:{subject}", figure)
        ]
        keys = [self._usage_day(delta.day), self._usage_days, self._usage_models]
        return keys, [delta.day, USAGE_TTL_S, USAGE_DAYS_KEPT, delta.model, *pairs]

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

    async def usage_by_model(self, period: str, subject: str = ALL_SUBJECTS) -> list[ModelUsage]:
        """A month is the sum of its days (one pipeline): the days' hashes hold the per-model counters."""
        days = _days_of(period)
        with _translated("usage_by_model"):
            models = sorted(await self._redis.smembers(self._usage_models))
            if not models:
                return []
            fields = [f"{name}@{model}:{subject}" for model in models for name in _USAGE_FIELDS]
            pipe = self._redis.pipeline(transaction=False)
            for day in days:
                pipe.hmget(self._usage_day(day), *fields)
            rows = await pipe.execute()
        sums = [sum(int(row[i] or 0) for row in rows) for i in range(len(fields))]
        width = len(_USAGE_FIELDS)
        figures = [(model, sums[i * width : (i + 1) * width]) for i, model in enumerate(models)]
        return [ModelUsage(model, *counts) for model, counts in figures if any(counts)]

    # --- per-chat and per-user settings, runtime budgets ------------------------------------------
    @property
    def _settings(self) -> str:
        return f"{self._prefix}settings"

    async def turn_settings(self, chat_id: str, user_id: str) -> TurnSettings:
        """One ``HMGET``: the chats' choices and the users' instructions share one hash."""
        fields = (
            f"{ChatSetting.MODEL.value}:{chat_id}",
            f"{ChatSetting.PERSONA.value}:{chat_id}",
            f"instructions:{user_id}",
        )
        with _translated("turn_settings"):
            model, persona, instructions = await self._redis.hmget(self._settings, *fields)
        return TurnSettings(model, persona, instructions or "")

    async def set_chat_setting(self, chat_id: str, setting: ChatSetting, value: str) -> None:
        with _translated("set_chat_setting"):
            await self._redis.hset(self._settings, f"{setting.value}:{chat_id}", value)

    async def set_instructions(self, user_id: str, text: str) -> None:
        with _translated("set_instructions"):
            if text:
                await self._redis.hset(self._settings, f"instructions:{user_id}", text)
            else:
                await self._redis.hdel(self._settings, f"instructions:{user_id}")

    async def set_budget(self, identity: str, tokens_per_day: int | None) -> None:
        with _translated("set_budget"):
            if tokens_per_day is None:
                await self._redis.hdel(self._budgets, identity)
            else:
                await self._redis.hset(self._budgets, identity, tokens_per_day)

    async def budgets(self, identities: Sequence[str]) -> dict[str, int]:
        if not identities:
            return {}
        with _translated("budgets"):
            values = await self._redis.hmget(self._budgets, *identities)
        return {identity: int(value) for identity, value in zip(identities, values, strict=True) if value is not None}


def _days_of(period: str) -> list[str]:
    """A day is itself; a month (``YYYY-MM``) is each of its days."""
    if len(period) != 7:
        return [period]
    year, month = int(period[:4]), int(period[5:])
    return [f"{period}-{day:02d}" for day in range(1, calendar.monthrange(year, month)[1] + 1)]
