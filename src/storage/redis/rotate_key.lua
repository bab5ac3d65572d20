-- Compare-and-set rotation of the signing key.
-- KEYS[1]: sorted set of key ids by creation. ARGV: expected active kid ('' for none),
-- key hash prefix, new kid, alg, private key, encrypted, created_at, retire_until.
local kids = redis.call('ZREVRANGE', KEYS[1], 0, -1)
local active = ''
local live = {}
for _, kid in ipairs(kids) do
  if redis.call('HEXISTS', ARGV[2] .. kid, 'retired_at') == 0 then
    if active == '' then active = kid end
    table.insert(live, kid)
  end
end
if active ~= ARGV[1] then return 0 end
for _, kid in ipairs(live) do
  redis.call('HSET', ARGV[2] .. kid, 'retired_at', ARGV[7], 'expires_at', ARGV[8])
end
redis.call('HSET', ARGV[2] .. ARGV[3], 'kid', ARGV[3], 'alg', ARGV[4], 'private_key', ARGV[5],
  'encrypted', ARGV[6], 'created_at', ARGV[7])
redis.call('ZADD', KEYS[1], ARGV[7], ARGV[3])
return 1
