-- KEYS[1]: index key of a refresh token. ARGV: token hash, session key prefix.
-- Returns the session's fields and whether the token is the family's live one.
local sid = redis.call('GET', KEYS[1])
if not sid then return {0, {}} end
local skey = ARGV[2] .. sid
local current = redis.call('HGET', skey, 'current_hash')
return {current == ARGV[1] and 1 or 0, redis.call('HGETALL', skey)}
