"""Redis dedup store (``dedup_store="redis://host:6379/0"``), shared by hosts.

One hash per fingerprint, ``otel-perfmon:dedup:<fingerprint>``; claims and occurrence updates
are Lua scripts, so they are atomic on the server. Needs the ``redis`` extra.
"""

from __future__ import annotations

from typing import Any, List, Optional

from otel_perfmon.dedup.base import Claim, DedupEntry, DedupStore

KEY_PREFIX = "otel-perfmon:dedup:"

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

_RELEASE = """
if redis.call('HGET', KEYS[1], 'report_id') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisDedupStore(DedupStore):
    """Keys live until overwritten by a later window's claim; redis-py handles reconnection."""

    def __init__(self, url: str, socket_timeout_seconds: float = 5.0) -> None:
        self.url = url
        self._timeout = socket_timeout_seconds
        self._client: Any = None

    def _redis(self) -> Any:
        if self._client is None:
            import redis

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

    @staticmethod
    def _entry(fingerprint: str, data: Any) -> Optional[DedupEntry]:
        if not data or "report_id" not in data:
            return None
        return DedupEntry(fingerprint, data["report_id"], float(data["created_at"]), float(data["last_seen"]),
                          int(data.get("count", 0)), float(data.get("worst_duration_ms", 0)),
                          data.get("last_trace_id"))

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

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
