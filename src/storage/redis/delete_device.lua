-- Deletes a device and ends its sessions. ARGV: key prefix, owner user id, device id, now.
-- Returns {found (1/0), ended sessions' fields}.
local P = ARGV[1]
local dkey = P .. 'device:' .. ARGV[3]
local d = redis.call('HMGET', dkey, 'user_id', 'fingerprint')
if d[1] ~= ARGV[2] then return {0, {}} end
local now = tonumber(ARGV[4])
local ended = {}
for _, id in ipairs(redis.call('ZRANGE', P .. 'user_sessions:' .. ARGV[2], 0, -1)) do
  local skey = P .. 'session:' .. id
  local g = redis.call('HMGET', skey, 'device_id', 'revoked_at')
  if g[1] == ARGV[3] then
    if not g[2] then
      redis.call('HSET', skey, 'revoked_at', ARGV[4], 'revoke_reason', 'device_removed')
      redis.call('ZADD', P .. 'session_ends', ARGV[4], id)
      table.insert(ended, redis.call('HGETALL', skey))
    end
    redis.call('HDEL', skey, 'device_id')
  end
end
redis.call('DEL', dkey, P .. 'device_fp:' .. ARGV[2] .. ':' .. d[2])
redis.call('SREM', P .. 'user_devices:' .. ARGV[2], ARGV[3])
return {1, ended}
