-- A login, atomically: upsert the device, evict the least recently used sessions beyond the
-- limit, store the session and its refresh token.
-- ARGV: 1 key prefix, 2 max sessions, 3 now, 4 refresh hash, 5 device named by client (1/0),
-- 6 new device id, 7 fingerprint, 8 device name, 9 platform, 10 user agent, 11 ip,
-- 12 session id, 13 user id, 14 client id, 15 scope, 16 last used, 17 idle expiry,
-- 18 absolute expiry, 19 session ip, 20 session user agent, 21 access token id, 22 resource,
-- 23 index the token by its hash (1: a token of the format before, which names no session).
-- '' means absent.
local P = ARGV[1]
local now = tonumber(ARGV[3])
local uid = ARGV[13]
local indexed = ARGV[23] == '1'
if indexed and redis.call('EXISTS', P .. 'rt:' .. ARGV[4]) == 1 then
  return {'conflict', {}, {}, 0, {}}
end
local function set_present(key, field, value)
  if value ~= '' then redis.call('HSET', key, field, value) end
end

local fp_key = P .. 'device_fp:' .. uid .. ':' .. ARGV[7]
local did = redis.call('GET', fp_key)
local new_device = 0
if did and redis.call('EXISTS', P .. 'device:' .. did) == 1 then
  local dkey = P .. 'device:' .. did
  redis.call('HSET', dkey, 'last_seen_at', ARGV[3])
  set_present(dkey, 'last_ip', ARGV[11])
  set_present(dkey, 'user_agent', ARGV[10])
  set_present(dkey, 'platform', ARGV[9])
  if ARGV[5] == '1' then redis.call('HSET', dkey, 'name', ARGV[8]) end
else
  did = ARGV[6]
  new_device = 1
  local dkey = P .. 'device:' .. did
  redis.call('HSET', dkey, 'id', did, 'user_id', uid, 'fingerprint', ARGV[7], 'name', ARGV[8],
    'first_seen_at', ARGV[3], 'last_seen_at', ARGV[3], 'trusted', '0')
  set_present(dkey, 'platform', ARGV[9])
  set_present(dkey, 'user_agent', ARGV[10])
  set_present(dkey, 'last_ip', ARGV[11])
  redis.call('SET', fp_key, did)
  redis.call('SADD', P .. 'user_devices:' .. uid, did)
end

local ukey = P .. 'user_sessions:' .. uid
local live = {}
for _, id in ipairs(redis.call('ZRANGE', ukey, 0, -1)) do
  local g = redis.call('HMGET', P .. 'session:' .. id, 'revoked_at', 'expires_at', 'idle_expires_at')
  if not g[2] then
    redis.call('ZREM', ukey, id)
  elseif not g[1] and tonumber(g[2]) > now and tonumber(g[3]) > now then
    table.insert(live, id)
  end
end
local evicted = {}
for i = 1, #live + 1 - math.max(tonumber(ARGV[2]), 1) do
  local skey = P .. 'session:' .. live[i]
  redis.call('HSET', skey, 'revoked_at', ARGV[3], 'revoke_reason', 'evicted')
  redis.call('ZADD', P .. 'session_ends', ARGV[3], live[i])
  table.insert(evicted, redis.call('HGETALL', skey))
end

local sid = ARGV[12]
local skey = P .. 'session:' .. sid
redis.call('HSET', skey, 'id', sid, 'user_id', uid, 'client_id', ARGV[14], 'scope', ARGV[15],
  'created_at', ARGV[3], 'last_used_at', ARGV[16], 'idle_expires_at', ARGV[17],
  'expires_at', ARGV[18], 'current_hash', ARGV[4], 'device_id', did)
set_present(skey, 'ip', ARGV[19])
set_present(skey, 'user_agent', ARGV[20])
set_present(skey, 'access_jti', ARGV[21])
set_present(skey, 'resource', ARGV[22])
redis.call('PEXPIREAT', skey, ARGV[18])
if indexed then redis.call('SET', P .. 'rt:' .. ARGV[4], sid, 'PXAT', ARGV[18]) end
redis.call('ZADD', ukey, ARGV[16], sid)
redis.call('ZADD', P .. 'session_ends', ARGV[17], sid)
return {'ok', redis.call('HGETALL', skey), redis.call('HGETALL', P .. 'device:' .. did),
  new_device, evicted}
