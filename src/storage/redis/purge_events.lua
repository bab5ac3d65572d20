-- Deletes up to ARGV[4] audit records with ids below ARGV[2] (a UUIDv7 bound) and up to
-- ARGV[4] deliveries finished before ARGV[3]. ARGV[1]: key prefix; ARGV[5..]: the event
-- types, whose indexes hold every record. Returns both counts.
local P = ARGV[1]
local limit = tonumber(ARGV[4])
local purged = 0
for i = 5, #ARGV do
  if purged >= limit then break end
  local index = P .. 'audit_event:' .. ARGV[i]
  -- Members are "<id>\t<record JSON>"; the user's index holds "<id>\t<event>".
  local members = redis.call('ZRANGEBYLEX', index, '-', '(' .. ARGV[2], 'LIMIT', 0, limit - purged)
  for _, m in ipairs(members) do
    local tab = string.find(m, '\t', 1, true)
    if tab then
      local r = cjson.decode(string.sub(m, tab + 1))
      if type(r.user_id) == 'string' then
        redis.call('ZREM', P .. 'audit_user:' .. r.user_id, string.sub(m, 1, tab) .. ARGV[i])
      end
    end
  end
  -- The members came from the start of the index in order: everything up to the last goes.
  if #members > 0 then redis.call('ZREMRANGEBYLEX', index, '-', '[' .. members[#members]) end
  purged = purged + #members
end
local done = redis.call('ZRANGEBYSCORE', P .. 'deliveries_finished:all', '-inf', '(' .. ARGV[3], 'LIMIT', 0, ARGV[4])
for _, id in ipairs(done) do
  local sid = redis.call('HGET', P .. 'delivery:' .. id, 'subscription_id')
  if sid then redis.call('ZREM', P .. 'webhook_deliveries:' .. sid, id) end
  redis.call('DEL', P .. 'delivery:' .. id, P .. 'delivery_attempts:' .. id)
  redis.call('ZREM', P .. 'deliveries_finished:all', id)
  redis.call('ZREM', P .. 'deliveries_failed:all', id)
end
return {purged, #done}
