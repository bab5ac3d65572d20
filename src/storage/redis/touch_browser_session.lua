-- KEYS[1]: browser session key. ARGV: now, idle_until.
-- Returns the session's fields with its idle expiry moved to idle_until (never past its
-- absolute expiry), or an empty list when there is no such session or it has timed out.
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local now = tonumber(ARGV[1])
local expires = tonumber(redis.call('HGET', KEYS[1], 'expires_at'))
local idle = tonumber(redis.call('HGET', KEYS[1], 'idle_expires_at'))
if expires <= now or idle <= now then return {} end
redis.call('HSET', KEYS[1], 'idle_expires_at', math.min(tonumber(ARGV[2]), expires))
return redis.call('HGETALL', KEYS[1])
