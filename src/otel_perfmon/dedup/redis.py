"""Redis dedup store (``dedup_store="redis://host:6379/0"``), shared by hosts.

One hash per fingerprint, ``otel-perfmon:dedup:<fingerprint>``; claims and occurrence updates
are Lua scripts, so they are atomic on the server. Route stats (every request's numbers, see
:mod:`otel_perfmon.route_stats`) are one hash per fingerprint too,
``otel-perfmon:route-stats:<fingerprint>``: ``service_name``, ``method``, ``route``,
``first_seen``, ``last_seen``, ``count`` and ``slow`` (HINCRBY), ``max_ms`` and one ``le:<bound>``
count per non-empty bucket; a flush is one MULTI/EXEC of one Lua script per route. Needs the
``redis`` extra.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

from otel_perfmon.dedup.base import (
    Claim,
    Decide,
    DedupEntry,
    DedupStore,
    KeptVersion,
    RouteStatsDelta,
    RouteStatsEntry,
    bucket_bound,
)
from otel_perfmon.errors import ConfigurationError

KEY_PREFIX = "otel-perfmon:dedup:"
#: One hash per route fingerprint (not below KEY_PREFIX: ``entries`` scans that).
ROUTE_STATS_PREFIX = "otel-perfmon:route-stats:"
#: Bucket fields of a route-stats hash: ``le:<upper bound in ms>`` (``le:+Inf`` for the overflow).
BUCKET_FIELD_PREFIX = "le:"

_CLAIM = """
local created = redis.call('HGET', KEYS[1], 'created_at')
local window = tonumber(ARGV[3])
if created and window > 0 and tonumber(ARGV[2]) - tonumber(created) < window then
  return {redis.call('HGET', KEYS[1], 'report_id'), 0}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'report_id', ARGV[1], 'created_at', ARGV[2], 'last_seen', ARGV[2],
           'count', 0, 'worst_duration_ms', 0)
return {ARGV[1], 1}
"""

_OCCURRENCE = """
if redis.call('HGET', KEYS[1], 'report_id') ~= ARGV[1] then return 0 end
redis.call('HINCRBY', KEYS[1], 'count', 1)
if tonumber(ARGV[3]) > tonumber(redis.call('HGET', KEYS[1], 'last_seen')) then
  redis.call('HSET', KEYS[1], 'last_seen', ARGV[3])
end
if tonumber(ARGV[2]) > tonumber(redis.call('HGET', KEYS[1], 'worst_duration_ms')) then
  redis.call('HSET', KEYS[1], 'worst_duration_ms', ARGV[2])
end
redis.call('HSET', KEYS[1], 'last_trace_id', ARGV[4])
return 1
"""

_SET_KEPT = """
if redis.call('HGET', KEYS[1], 'report_id') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'kept_duration_ms', ARGV[2], 'kept_mode', ARGV[3], 'kept_coverage', ARGV[4])
return 1
"""

_RELEASE = """
if redis.call('HGET', KEYS[1], 'report_id') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


# KEYS[1] the route's hash; ARGV: now, service, method, route, count, slow, max_ms, then bucket field/count pairs
_ADD_ROUTE_STATS = """
local key = KEYS[1]
redis.call('HSETNX', key, 'first_seen', ARGV[1])
local last = tonumber(redis.call('HGET', key, 'last_seen') or '0')
if tonumber(ARGV[1]) > last then redis.call('HSET', key, 'last_seen', ARGV[1]) end
redis.call('HSET', key, 'service_name', ARGV[2], 'method', ARGV[3], 'route', ARGV[4])
redis.call('HINCRBY', key, 'count', ARGV[5])
redis.call('HINCRBY', key, 'slow', ARGV[6])
local max = tonumber(redis.call('HGET', key, 'max_ms') or '0')
if tonumber(ARGV[7]) > max then redis.call('HSET', key, 'max_ms', ARGV[7]) end
for i = 8, #ARGV, 2 do redis.call('HINCRBY', key, ARGV[i], ARGV[i + 1]) end
return 1
"""


class RedisDedupStore(DedupStore):
    """Keys live until overwritten by a later window's claim; redis-py handles reconnection."""

    def __init__(self, url: str, socket_timeout_seconds: float = 5.0) -> None:
        self.url = url
        self._timeout = socket_timeout_seconds
        self._client: Any = None
        # redis-py is imported and the client built now (configure time; no connection yet):
        # the import costs ~0.2 s of CPU, too much for a process's first call on a busy host
        # (the resilient store's calls are bounded; see dedup/resilient.py). redis-py opens a
        # new connection in a forked child by itself (its pool checks the pid).
        self._redis()

    @classmethod
    def from_spec(cls, spec: str, report_dir: str) -> RedisDedupStore:
        """``dedup_store="redis://host:6379/0"`` (also ``rediss://`` and ``unix://``)."""
        return cls(spec)

    def _redis(self) -> Any:
        if self._client is None:
            try:
                import redis
            except ImportError:
                raise ConfigurationError("dedup_store: a redis:// store needs the redis extra "
                                         "(pip install 'otel-perfmon[redis]')") from None

            self._client = redis.Redis.from_url(self.url, socket_timeout=self._timeout,
                                                socket_connect_timeout=self._timeout, decode_responses=True)
        return self._client

    def claim(self, fingerprint: str, candidate_id: str, now: float, window_seconds: float) -> Claim:
        report_id, is_new = self._redis().eval(_CLAIM, 1, KEY_PREFIX + fingerprint,
                                               candidate_id, repr(now), repr(float(window_seconds)))
        return Claim(report_id, bool(int(is_new)))

    def record_occurrence(self, fingerprint: str, report_id: str, duration_ms: float,
                          trace_id: str, now: float) -> None:
        self._redis().eval(_OCCURRENCE, 1, KEY_PREFIX + fingerprint, report_id,
                           repr(float(duration_ms)), repr(now), trace_id)

    def release(self, fingerprint: str, report_id: str) -> None:
        self._redis().eval(_RELEASE, 1, KEY_PREFIX + fingerprint, report_id)

    def set_kept(self, fingerprint: str, report_id: str, version: KeptVersion) -> None:
        self._redis().eval(_SET_KEPT, 1, KEY_PREFIX + fingerprint, report_id, repr(float(version.duration_ms)),
                           version.mode, repr(float(version.coverage)), "")

    def replace_kept(self, fingerprint: str, report_id: str, candidate: KeptVersion,
                     decide: Decide) -> Tuple[bool, bool]:
        # optimistic: read, decide here, write only if the hash did not change meanwhile
        import redis

        key = KEY_PREFIX + fingerprint
        client = self._redis()
        for _attempt in range(5):
            with client.pipeline() as pipe:
                try:
                    pipe.watch(key)
                    data = pipe.hgetall(key)
                    if not data or data.get("report_id") != report_id:
                        return False, False
                    kept = KeptVersion(float(data.get("kept_duration_ms", 0)), data.get("kept_mode", ""),
                                       float(data.get("kept_coverage", 0))) if data.get("kept_mode") else None
                    followed = data.get("followed_up") == "1"
                    replace, follow_up = decide(kept, candidate, followed)
                    if not replace:
                        return False, False
                    pipe.multi()
                    pipe.hset(key, mapping={"kept_duration_ms": repr(float(candidate.duration_ms)),
                                            "kept_mode": candidate.mode,
                                            "kept_coverage": repr(float(candidate.coverage)),
                                            "followed_up": "1" if (followed or follow_up) else "0"})
                    pipe.execute()
                    return True, follow_up
                except redis.WatchError:
                    continue
        return False, False

    @staticmethod
    def _entry(fingerprint: str, data: Any) -> Optional[DedupEntry]:
        if not data or "report_id" not in data:
            return None
        return DedupEntry(fingerprint, data["report_id"], float(data["created_at"]), float(data["last_seen"]),
                          int(data.get("count", 0)), float(data.get("worst_duration_ms", 0)),
                          data.get("last_trace_id"), float(data.get("kept_duration_ms", 0)),
                          data.get("kept_mode", ""), float(data.get("kept_coverage", 0)),
                          data.get("followed_up") == "1")

    def get(self, fingerprint: str) -> Optional[DedupEntry]:
        return self._entry(fingerprint, self._redis().hgetall(KEY_PREFIX + fingerprint))

    def entries(self) -> List[DedupEntry]:
        client = self._redis()
        found = []
        for key in client.scan_iter(match=KEY_PREFIX + "*", count=500):
            entry = self._entry(key[len(KEY_PREFIX):], client.hgetall(key))
            if entry is not None:
                found.append(entry)
        return found

    def add_route_stats(self, deltas: Sequence[RouteStatsDelta], now: float) -> None:
        if not deltas:
            return
        with self._redis().pipeline(transaction=True) as pipe:  # MULTI/EXEC: all routes or none
            for d in deltas:
                args: List[Any] = [repr(float(now)), d.service_name, d.method, d.route, d.count, d.slow,
                                   repr(float(d.max_ms))]
                for key, count in d.buckets:
                    args += [BUCKET_FIELD_PREFIX + key, count]
                pipe.eval(_ADD_ROUTE_STATS, 1, ROUTE_STATS_PREFIX + d.fingerprint, *args)
            pipe.execute()

    @staticmethod
    def _route_entry(fingerprint: str, data: Any) -> Optional[RouteStatsEntry]:
        if not data or "count" not in data:
            return None
        buckets = []
        for field, value in data.items():
            if field.startswith(BUCKET_FIELD_PREFIX):
                try:
                    buckets.append((bucket_bound(field[len(BUCKET_FIELD_PREFIX):]), int(value)))
                except ValueError:
                    continue
        return RouteStatsEntry(fingerprint, data.get("service_name", ""), data.get("method", ""), data.get("route", ""),
                               int(data.get("count", 0)), int(data.get("slow", 0)), float(data.get("max_ms", 0)),
                               float(data.get("first_seen", 0)), float(data.get("last_seen", 0)),
                               tuple(sorted(buckets)))

    def route_stats(self) -> List[RouteStatsEntry]:
        client = self._redis()
        keys = list(client.scan_iter(match=ROUTE_STATS_PREFIX + "*", count=500))
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(key)
            values = pipe.execute() if keys else []
        found = []
        for key, data in zip(keys, values):
            entry = self._route_entry(key[len(ROUTE_STATS_PREFIX):], data)
            if entry is not None:
                found.append(entry)
        return found

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
