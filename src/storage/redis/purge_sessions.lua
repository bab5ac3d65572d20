-- Deletes up to ARGV[3] sessions that ended before ARGV[2], returning their fields.
-- ARGV[1]: key prefix. The index session_ends scores each session by when it ends (idle
-- expiry, or revocation).
local P = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', P .. 'session_ends', '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])
local deleted = {}
for _, id in ipairs(ids) do
  local skey = P .. 'session:' .. id
  local fields = redis.call('HGETALL', skey)
  local uid = redis.call('HGET', skey, 'user_id')
  if uid then redis.call('ZREM', P .. 'user_sessions:' .. uid, id) end
  redis.call('DEL', skey)
  redis.call('ZREM', P .. 'session_ends', id)
  table.insert(deleted, fields)
end
return deleted
