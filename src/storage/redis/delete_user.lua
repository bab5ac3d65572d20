-- Deletes a user with their sessions (ended or not), devices, consents and browser sign-ins.
-- ARGV: key prefix, user id. Returns 1, or 0 when there is no such user. Legacy token index
-- entries and codes name sessions and users that no longer exist, and expire on their own.
local P = ARGV[1]
local uid = ARGV[2]
local ukey = P .. 'user:' .. uid
local json = redis.call('GET', ukey)
if not json then return 0 end
local user = cjson.decode(json)
local nkey = P .. 'username:' .. user.username
if redis.call('GET', nkey) == uid then redis.call('DEL', nkey) end
redis.call('DEL', ukey)
local sessions = P .. 'user_sessions:' .. uid
for _, id in ipairs(redis.call('ZRANGE', sessions, 0, -1)) do
  redis.call('DEL', P .. 'session:' .. id)
  redis.call('ZREM', P .. 'session_ends', id)
end
local devices = P .. 'user_devices:' .. uid
for _, id in ipairs(redis.call('SMEMBERS', devices)) do
  local dkey = P .. 'device:' .. id
  local fp = redis.call('HGET', dkey, 'fingerprint')
  if fp then redis.call('DEL', P .. 'device_fp:' .. uid .. ':' .. fp) end
  redis.call('DEL', dkey)
end
local browsers = P .. 'user_browsers:' .. uid
for _, hash in ipairs(redis.call('SMEMBERS', browsers)) do
  redis.call('DEL', P .. 'browser:' .. hash)
end
redis.call('DEL', sessions, devices, browsers, P .. 'consents:' .. uid)
return 1
