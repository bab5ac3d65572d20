-- Deletes up to ARGV[4] audit records with ids below ARGV[2] (a UUIDv7 bound) and up to
-- ARGV[4] deliveries finished before ARGV[3]. ARGV[1]: key prefix. Returns both counts.
local P = ARGV[1]
local audit = redis.call('ZRANGEBYLEX', P .. 'audit_all:ids', '-', '(' .. ARGV[2], 'LIMIT', 0, ARGV[4])
for _, id in ipairs(audit) do
  local raw = redis.call('GET', P .. 'audit:' .. id)
  if raw then
    local r = cjson.decode(raw)
    if type(r.user_id) == 'string' then redis.call('ZREM', P .. 'audit_user:' .. r.user_id, id) end
    redis.call('ZREM', P .. 'audit_event:' .. r.event, id)
  end
  redis.call('DEL', P .. 'audit:' .. id)
  redis.call('ZREM', P .. 'audit_all:ids', id)
end
local done = redis.call('ZRANGEBYSCORE', P .. 'deliveries_finished:all', '-inf', '(' .. ARGV[3], 'LIMIT', 0, ARGV[4])
for _, id in ipairs(done) do
  local sid = redis.call('HGET', P .. 'delivery:' .. id, 'subscription_id')
  if sid then redis.call('ZREM', P .. 'webhook_deliveries:' .. sid, id) end
  redis.call('DEL', P .. 'delivery:' .. id, P .. 'delivery_attempts:' .. id)
  redis.call('ZREM', P .. 'deliveries_finished:all', id)
  redis.call('ZREM', P .. 'deliveries_failed:all', id)
end
return {#audit, #done}
