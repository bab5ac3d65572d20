-- KEYS[1]: index key of a refresh token. ARGV: token hash, key prefix.
-- Returns whether the token is the family's live one, and the session's fields.
local sid = redis.call('GET', KEYS[1])
if not sid then return {0, {}} end
local skey = ARGV[2] .. 'session:' .. sid
local current = redis.call('HGET', skey, 'current_hash')
return {current == ARGV[1] and 1 or 0, redis.call('HGETALL', skey)}
