-- Deletes a subscription and its deliveries. ARGV: key prefix, subscription id.
local P = ARGV[1]
if redis.call('DEL', P .. 'webhook:' .. ARGV[2]) == 0 then return 0 end
redis.call('SREM', P .. 'webhooks:all', ARGV[2])
local index = P .. 'webhook_deliveries:' .. ARGV[2]
for _, id in ipairs(redis.call('ZRANGE', index, 0, -1)) do
  redis.call('DEL', P .. 'delivery:' .. id, P .. 'delivery_attempts:' .. id)
  redis.call('ZREM', P .. 'deliveries_due:all', id)
  redis.call('ZREM', P .. 'deliveries_finished:all', id)
  redis.call('ZREM', P .. 'deliveries_failed:all', id)
end
redis.call('DEL', index)
return 1
