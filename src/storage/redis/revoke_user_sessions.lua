-- Ends every live session of a user except one. ARGV: key prefix, user id, except ('' for
-- none), now, reason. Returns the ended sessions' fields.
local P = ARGV[1]
local now = tonumber(ARGV[4])
local ukey = P .. 'user_sessions:' .. ARGV[2]
local ended = {}
for _, id in ipairs(redis.call('ZRANGE', ukey, 0, -1)) do
  local skey = P .. 'session:' .. id
  local g = redis.call('HMGET', skey, 'revoked_at', 'expires_at', 'idle_expires_at')
  if not g[2] then
    redis.call('ZREM', ukey, id)
  elseif id ~= ARGV[3] and not g[1] and tonumber(g[2]) > now and tonumber(g[3]) > now then
    redis.call('HSET', skey, 'revoked_at', ARGV[4], 'revoke_reason', ARGV[5])
    redis.call('ZADD', P .. 'session_ends', ARGV[4], id)
    table.insert(ended, redis.call('HGETALL', skey))
  end
end
return ended
