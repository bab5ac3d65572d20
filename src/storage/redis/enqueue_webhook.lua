-- Fans an event out to the subscriptions of its type (or only ARGV[6]), atomically.
-- ARGV: key prefix, event id, event type, payload, now, only subscription ('' for all).
local P = ARGV[1]
local queued = 0
for _, sid in ipairs(redis.call('SMEMBERS', P .. 'webhooks:all')) do
  local raw = redis.call('GET', P .. 'webhook:' .. sid)
  if raw then
    local sub = cjson.decode(raw)
    local wanted = false
    if ARGV[6] ~= '' then
      wanted = sid == ARGV[6]
    else
      for event in string.gmatch(sub.events, '%S+') do
        if event == ARGV[3] then wanted = true end
      end
    end
    if wanted then
      local id = ARGV[2] .. ':' .. sid
      redis.call('HSET', P .. 'delivery:' .. id, 'id', id, 'subscription_id', sid,
        'event_id', ARGV[2], 'event', ARGV[3], 'payload', ARGV[4], 'status', 'pending',
        'attempts', 0, 'next_attempt_at', ARGV[5], 'created_at', ARGV[5])
      redis.call('ZADD', P .. 'deliveries_due:all', ARGV[5], id)
      redis.call('ZADD', P .. 'webhook_deliveries:' .. sid, ARGV[5], id)
      queued = queued + 1
    end
  end
end
return queued
