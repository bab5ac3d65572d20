-- KEYS[1]: session key. ARGV: now, reason, key prefix, session id.
-- Returns the session's fields when a live session was revoked, else an empty list.
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
if redis.call('HEXISTS', KEYS[1], 'revoked_at') == 1 then return {} end
redis.call('HSET', KEYS[1], 'revoked_at', ARGV[1], 'revoke_reason', ARGV[2])
redis.call('ZADD', ARGV[3] .. 'session_ends', ARGV[1], ARGV[4])
return redis.call('HGETALL', KEYS[1])
