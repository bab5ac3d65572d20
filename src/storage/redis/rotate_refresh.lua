-- The refresh rule of storage::Rotation::decide, applied atomically (a script runs alone).
-- KEYS[1]: index key of the presented token; KEYS[2]: index key of the new token.
-- ARGV: presented hash, new hash, client id, now, grace ms, idle ms, key prefix, client ip
-- ('' when unknown), reuse window ms, new access token id, until when a superseded access
-- token stays revoked.
local P = ARGV[7]
local sid = redis.call('GET', KEYS[1])
if not sid then return {'invalid', {}} end
local skey = P .. 'session:' .. sid
local f = redis.call('HMGET', skey, 'client_id', 'revoked_at', 'expires_at',
  'idle_expires_at', 'current_hash', 'previous_hash', 'rotated_at', 'device_id', 'user_id',
  'access_jti')
if not f[1] or f[1] ~= ARGV[3] then return {'invalid', {}} end
local now = tonumber(ARGV[4])
local expires_at = tonumber(f[3])
local outcome
if f[2] or expires_at <= now or tonumber(f[4]) <= now then
  outcome = 'ended'
else
  local idle = string.format('%.0f', math.min(now + tonumber(ARGV[6]), expires_at))
  -- A used token is remembered (for reuse detection) for the reuse window.
  local forget_at = string.format('%.0f', math.min(now + tonumber(ARGV[9]), expires_at))
  if f[5] == ARGV[1] then
    redis.call('HSET', skey, 'previous_hash', f[5], 'current_hash', ARGV[2],
      'rotated_at', ARGV[4], 'last_used_at', ARGV[4], 'idle_expires_at', idle,
      'access_jti', ARGV[10])
    redis.call('PEXPIREAT', KEYS[1], forget_at)
    outcome = 'rotated'
  elseif f[6] == ARGV[1] and f[7] and now - tonumber(f[7]) <= tonumber(ARGV[5]) then
    -- The successor issued before is replaced; its index key stays, so presenting it is reuse.
    -- One retry per rotation: the previous token is forgotten, so a second one is reuse. The
    -- access token issued with the superseded pair is revoked.
    if f[10] then
      redis.call('SET', P .. 'revoked:' .. f[10], '1', 'PXAT', ARGV[11])
    end
    redis.call('HDEL', skey, 'previous_hash')
    redis.call('HSET', skey, 'current_hash', ARGV[2], 'last_used_at', ARGV[4],
      'idle_expires_at', idle, 'access_jti', ARGV[10])
    redis.call('PEXPIREAT', P .. 'rt:' .. f[5], forget_at)
    outcome = 'grace'
  else
    redis.call('HSET', skey, 'revoked_at', ARGV[4], 'revoke_reason', 'refresh_token_reuse')
    redis.call('ZADD', P .. 'session_ends', ARGV[4], sid)
    outcome = 'reused'
  end
  if outcome ~= 'reused' then
    redis.call('SET', KEYS[2], sid, 'PXAT', f[3])
    redis.call('ZADD', P .. 'user_sessions:' .. f[9], ARGV[4], sid)
    redis.call('ZADD', P .. 'session_ends', idle, sid)
    if f[8] and redis.call('EXISTS', P .. 'device:' .. f[8]) == 1 then
      redis.call('HSET', P .. 'device:' .. f[8], 'last_seen_at', ARGV[4])
      if ARGV[8] ~= '' then redis.call('HSET', P .. 'device:' .. f[8], 'last_ip', ARGV[8]) end
    end
  end
end
return {outcome, redis.call('HGETALL', skey)}
