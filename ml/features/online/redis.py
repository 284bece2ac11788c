"""The Redis online store: one hash per (feature set, version, entity), compare-and-set in Lua.

Used when ``LOOPLINE_ONLINE_STORE_URL`` is ``redis://`` or ``rediss://``. The timestamps are
hash fields and the vector is JSON; a registered Lua script does the newer-wins
compare-and-set server-side, pipelined for batches. Keys written before versions were part
of the key (``<namespace><feature_set>:<entity>``) are no longer read; the next
materialisation writes every version under the new keys.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd
import pyarrow as pa

from ml.features.online.base import (
    MICROS,
    FeatureVector,
    OnlineStore,
    OnlineStoreUnavailableError,
    WriteReport,
    check_feature_set,
    chunks,
    decode_vector,
    encode_rows,
    entity_key,
    from_micros,
    normalize_rows,
    redact,
)

DEFAULT_REDIS_NAMESPACE = "loopline:online:"
# a version never holds ':', so "<feature_set>:<version>:<entity>" splits one way only
_VERSION = re.compile(r"^[A-Za-z0-9_.\-]*$")

# KEYS[1]: the entity's hash. ARGV: feature_timestamp seconds, microseconds; created_at seconds,
# microseconds ('' when NULL); version ('' when NULL), has-version flag; vector JSON.
# Times travel as (seconds, microseconds) because Lua numbers are doubles: epoch microseconds
# beyond 2^53 (after year 2255) would compare wrongly, seconds never do.
_CAS_LUA = """
local cur = redis.call('HMGET', KEYS[1], 'ts_s', 'ts_us', 'ca_s', 'ca_us')
if cur[1] then
  local has_new_ca = ARGV[3] ~= ''
  local new = {tonumber(ARGV[1]), tonumber(ARGV[2]), has_new_ca and 1 or 0,
               tonumber(ARGV[3]) or 0, tonumber(ARGV[4]) or 0}
  local old = {tonumber(cur[1]), tonumber(cur[2]), cur[3] and 1 or 0,
               tonumber(cur[3]) or 0, tonumber(cur[4]) or 0}
  local newer = false
  for i = 1, 5 do
    if new[i] ~= old[i] then
      newer = new[i] > old[i]
      break
    end
  end
  if not newer then
    return 0
  end
end
redis.call('HSET', KEYS[1], 'ts_s', ARGV[1], 'ts_us', ARGV[2], 'val', ARGV[7])
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], 'ca_s', 'ca_us')
else
  redis.call('HSET', KEYS[1], 'ca_s', ARGV[3], 'ca_us', ARGV[4])
end
if ARGV[6] == '1' then
  redis.call('HSET', KEYS[1], 'ver', ARGV[5])
else
  redis.call('HDEL', KEYS[1], 'ver')
end
return 1
"""

_FIELDS = ("ts_s", "ts_us", "ca_s", "ca_us", "ver", "val")
_PIPELINE_CHUNK = 1000  # commands per pipeline round trip


class RedisOnlineStore(OnlineStore):
    """The online store in Redis: hash ``<namespace><feature_set>:<version>:<entity_key>``.

    Fields: ``ts_s``/``ts_us`` and ``ca_s``/``ca_us`` (the times as epoch seconds and
    microseconds; ``ca_*`` absent when created_at is NULL), ``ver`` (absent when NULL: the
    unversioned slot, version ``''`` in the key) and
    ``val`` (the JSON vector). A hash per entity keeps each compare-and-set to one small key
    and leaves room for a per-entity TTL.
    """

    def __init__(
        self,
        url: str,
        namespace: str = DEFAULT_REDIS_NAMESPACE,
        socket_timeout_s: float = 5.0,
    ) -> None:
        import redis

        self.url = url
        self.namespace = namespace
        self._client = redis.Redis.from_url(
            url, socket_connect_timeout=socket_timeout_s, socket_timeout=socket_timeout_s
        )
        try:
            self._client.ping()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            self._client.close()
            raise OnlineStoreUnavailableError(
                f"the Redis online store at {redact(url)} is unreachable ({exc}); start Redis "
                "there, or unset LOOPLINE_ONLINE_STORE_URL to use the embedded SQLite store"
            ) from exc
        self._cas = self._client.register_script(_CAS_LUA)

    def write(
        self, feature_set: str, rows: pd.DataFrame | pa.Table, key_columns: Sequence[str]
    ) -> WriteReport:
        """Compare-and-set every row server-side (Lua), pipelined; return the counts."""
        check_feature_set(feature_set)
        encoded = encode_rows(normalize_rows(rows, key_columns), key_columns)
        written = 0
        for chunk in chunks(len(encoded.keys), _PIPELINE_CHUNK):
            pipe = self._client.pipeline(transaction=False)
            for key, ts, created, version, vector in zip(
                encoded.keys[chunk],
                encoded.feature_timestamps[chunk],
                encoded.created_ats[chunk],
                encoded.versions[chunk],
                encoded.vectors[chunk],
                strict=True,
            ):
                ts_s, ts_us = divmod(ts, MICROS)
                ca_s, ca_us = ("", "") if created is None else divmod(created, MICROS)
                args = [ts_s, ts_us, ca_s, ca_us, version or "", int(version is not None), vector]
                name = self._name(feature_set, version, key)
                self._cas(keys=[name], args=args, client=pipe)
            written += sum(int(result) for result in pipe.execute())
        return WriteReport(written=written, skipped=len(encoded.keys) - written)

    def get(
        self, feature_set: str, keys: Sequence[object], version: str | None = None
    ) -> list[FeatureVector | None]:
        """Return each key's vector in ``version`` (None where unknown), pipelined HMGETs."""
        names = [self._name(feature_set, version, entity_key(key)) for key in keys]
        vectors: list[FeatureVector | None] = []
        for chunk in chunks(len(names), _PIPELINE_CHUNK):
            pipe = self._client.pipeline(transaction=False)
            for name in names[chunk]:
                pipe.hmget(name, _FIELDS)
            vectors.extend(_redis_vector(fields) for fields in pipe.execute())
        return vectors

    def get_one(
        self, feature_set: str, key: object, version: str | None = None
    ) -> FeatureVector | None:
        """Return one key's vector in ``version`` or None: one HMGET."""
        fields = self._client.hmget(self._name(feature_set, version, entity_key(key)), _FIELDS)
        return _redis_vector(fields)  # type: ignore[arg-type]

    def mark(self, name: str) -> str | None:
        """The value last stored under `name` (None when never set): a field of one hash."""
        value = self._client.hget(self._marks, name)
        return None if value is None else value.decode()  # type: ignore[union-attr]

    def set_mark(self, name: str, value: str) -> None:
        """Store `value` under `name` in the namespace's marks hash."""
        self._client.hset(self._marks, name, value)

    @property
    def _marks(self) -> str:
        # no feature set's key starts with ':' (a feature-set name cannot)
        return f"{self.namespace}:marks"

    def _name(self, feature_set: str, version: str | None, key: str) -> str:
        version = version or ""
        if not _VERSION.match(version):
            raise ValueError(
                f"feature-set version {version!r} must be letters, digits, '_', '.' or '-'"
            )
        return f"{self.namespace}{feature_set}:{version}:{key}"

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()


def _redis_vector(fields: Sequence[bytes | None]) -> FeatureVector | None:
    ts_s, ts_us, ca_s, ca_us, version, vector = fields
    if ts_s is None or ts_us is None or vector is None:
        return None
    created = None
    if ca_s is not None and ca_us is not None:
        created = from_micros(int(ca_s) * MICROS + int(ca_us))
    return FeatureVector(
        values=decode_vector(vector),
        feature_timestamp=from_micros(int(ts_s) * MICROS + int(ts_us)),
        created_at=created,
        feature_set_version=None if version is None else version.decode(),
    )
