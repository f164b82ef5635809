"""Redis dedup store (``dedup_store="redis://host:6379/0"``), shared by hosts.

One hash per fingerprint, ``otel-perfmon:dedup:<fingerprint>``; claims and occurrence updates
are Lua scripts, so they are atomic on the server. Needs the ``redis`` extra.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from otel_perfmon.dedup.base import Claim, Decide, DedupEntry, DedupStore, KeptVersion

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

_SET_KEPT = """
if redis.call('HGET', KEYS[1], 'report_id') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'kept_duration_ms', ARGV[2], 'kept_mode', ARGV[3], 'kept_coverage', ARGV[4])
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

    @classmethod
    def from_spec(cls, spec: str, report_dir: str) -> RedisDedupStore:
        """``dedup_store="redis://host:6379/0"`` (also ``rediss://`` and ``unix://``)."""
        return cls(spec)

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

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
