-- The refresh rule of storage::Rotation::decide, applied atomically (a script runs alone).
-- KEYS[1]: index key of the presented token; KEYS[2]: index key of the new token.
-- ARGV: presented hash, new hash, client id, now, grace ms, idle ms, session key prefix.
local sid = redis.call('GET', KEYS[1])
if not sid then return {'invalid', {}} end
local skey = ARGV[7] .. sid
local f = redis.call('HMGET', skey, 'client_id', 'revoked_at', 'expires_at',
  'idle_expires_at', 'current_hash', 'previous_hash', 'rotated_at')
if not f[1] or f[1] ~= ARGV[3] then return {'invalid', {}} end
local now = tonumber(ARGV[4])
local expires_at = tonumber(f[3])
local outcome
if f[2] or expires_at <= now or tonumber(f[4]) <= now then
  outcome = 'ended'
else
  local idle = string.format('%.0f', math.min(now + tonumber(ARGV[6]), expires_at))
  if f[5] == ARGV[1] then
    redis.call('HSET', skey, 'previous_hash', f[5], 'current_hash', ARGV[2],
      'rotated_at', ARGV[4], 'last_used_at', ARGV[4], 'idle_expires_at', idle)
    outcome = 'rotated'
  elseif f[6] == ARGV[1] and f[7] and now - tonumber(f[7]) <= tonumber(ARGV[5]) then
    -- The successor issued before is replaced; its index key stays, so presenting it is reuse.
    redis.call('HSET', skey, 'current_hash', ARGV[2], 'last_used_at', ARGV[4],
      'idle_expires_at', idle)
    outcome = 'grace'
  else
    redis.call('HSET', skey, 'revoked_at', ARGV[4], 'revoke_reason', 'refresh_token_reuse')
    outcome = 'reused'
  end
  if outcome ~= 'reused' then
    redis.call('SET', KEYS[2], sid, 'PXAT', f[3])
  end
end
return {outcome, redis.call('HGETALL', skey)}
