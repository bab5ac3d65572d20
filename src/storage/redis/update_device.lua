-- KEYS[1]: device key. ARGV: owner user id, name ('' keeps), trusted ('' keeps, '1', '0').
-- Returns the device's fields, or an empty list when the user has no such device.
if redis.call('HGET', KEYS[1], 'user_id') ~= ARGV[1] then return {} end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'name', ARGV[2]) end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'trusted', ARGV[3]) end
return redis.call('HGETALL', KEYS[1])
