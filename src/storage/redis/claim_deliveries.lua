-- Claims due deliveries: moving a delivery's score to the end of its lease hides it from
-- every other claimer until then. ARGV: key prefix, now, lease until, limit.
local P = ARGV[1]
local claimed = {}
local ids = redis.call('ZRANGEBYSCORE', P .. 'deliveries_due:all', '-inf', ARGV[2], 'LIMIT', 0, ARGV[4])
for _, id in ipairs(ids) do
  local key = P .. 'delivery:' .. id
  if redis.call('HGET', key, 'status') == 'pending' then
    redis.call('HINCRBY', key, 'attempts', 1)
    redis.call('HSET', key, 'locked_until', ARGV[3])
    redis.call('ZADD', P .. 'deliveries_due:all', ARGV[3], id)
    table.insert(claimed, redis.call('HGETALL', key))
  else
    redis.call('ZREM', P .. 'deliveries_due:all', id)
  end
end
return claimed
