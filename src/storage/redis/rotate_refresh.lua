-- The refresh rule of storage::Rotation::decide, applied atomically (a script runs alone).
-- KEYS[1]: the session named by the token; KEYS[2]: the index key of the presented token when
-- it is of the format before (looked up by its hash), else unused.
-- ARGV: presented hash, new hash, client id, now, grace ms, idle ms, key prefix, client ip
-- ('' when unknown), reuse window ms, new access token id, until when a superseded access
-- token stays revoked, presented generation ('' for a token of the format before), new
-- generation, how often a device's sighting is written (ms).
local P = ARGV[7]
local skey = KEYS[1]
local f = redis.call('HMGET', skey, 'client_id', 'revoked_at', 'expires_at',
  'idle_expires_at', 'current_hash', 'previous_hash', 'rotated_at', 'device_id', 'user_id',
  'access_jti', 'generation', 'id')
local generation = tonumber(f[11] or '0')
if not f[1] or f[1] ~= ARGV[3] then return {'invalid', {}} end
if ARGV[12] ~= '' and tonumber(ARGV[12]) > generation then return {'invalid', {}} end
local sid = f[12]
local now = tonumber(ARGV[4])
local expires_at = tonumber(f[3])
local outcome
if f[2] or expires_at <= now or tonumber(f[4]) <= now then
  outcome = 'ended'
else
  local idle = string.format('%.0f', math.min(now + tonumber(ARGV[6]), expires_at))
  local reached = string.format('%.0f', math.max(tonumber(ARGV[13]), generation))
  if f[5] == ARGV[1] then
    redis.call('HSET', skey, 'previous_hash', f[5], 'current_hash', ARGV[2],
      'rotated_at', ARGV[4], 'last_used_at', ARGV[4], 'idle_expires_at', idle,
      'access_jti', ARGV[10], 'generation', reached)
    outcome = 'rotated'
  elseif f[6] == ARGV[1] and f[7] and now - tonumber(f[7]) <= tonumber(ARGV[5]) then
    -- One retry per rotation: the previous token is forgotten, so a second one is reuse. The
    -- access token issued with the superseded pair is revoked.
    if f[10] then
      redis.call('SET', P .. 'revoked:' .. f[10], '1', 'PXAT', ARGV[11])
    end
    redis.call('HDEL', skey, 'previous_hash')
    redis.call('HSET', skey, 'current_hash', ARGV[2], 'last_used_at', ARGV[4],
      'idle_expires_at', idle, 'access_jti', ARGV[10], 'generation', reached)
    outcome = 'grace'
  else
    redis.call('HSET', skey, 'revoked_at', ARGV[4], 'revoke_reason', 'refresh_token_reuse')
    redis.call('ZADD', P .. 'session_ends', ARGV[4], sid)
    outcome = 'reused'
  end
  if outcome ~= 'reused' then
    if ARGV[12] == '' then
      -- A token of the format before is remembered (for reuse detection) for the window.
      local forget_at = string.format('%.0f', math.min(now + tonumber(ARGV[9]), expires_at))
      redis.call('PEXPIREAT', KEYS[2], forget_at)
    end
    redis.call('ZADD', P .. 'user_sessions:' .. f[9], ARGV[4], sid)
    redis.call('ZADD', P .. 'session_ends', idle, sid)
    if f[8] then
      local dkey = P .. 'device:' .. f[8]
      local seen = redis.call('HGET', dkey, 'last_seen_at')
      if seen and tonumber(seen) <= now - tonumber(ARGV[14]) then
        redis.call('HSET', dkey, 'last_seen_at', ARGV[4])
        if ARGV[8] ~= '' then redis.call('HSET', dkey, 'last_ip', ARGV[8]) end
      end
    end
  end
end
return {outcome, redis.call('HGETALL', skey)}
