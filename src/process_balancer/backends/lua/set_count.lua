-- Set or change a job's worker count; refuses (writes nothing) when the result is negative.
-- A count set while the job is paused ends the pause: the operator's latest word wins.
-- KEYS: counts (hash), version, paused (hash)
-- ARGV: job id, 'to' or 'by', value, default count, channel
-- Returns {status, value}: status 1 = stored (value = new count), 0 = would be negative
-- (value = current count), -1 = the stored count is not an integer (value = what is stored).
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local current = tonumber(ARGV[4])
if raw then
  current = tonumber(raw)
  if current == nil or current ~= math.floor(current) then
    if ARGV[2] == 'by' then
      return {-1, raw}
    end
  end
end
local new
if ARGV[2] == 'to' then
  new = tonumber(ARGV[3])
else
  new = current + tonumber(ARGV[3])
end
if new < 0 then
  return {0, tostring(current)}
end
redis.call('HSET', KEYS[1], ARGV[1], new)
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[5], 'state')
return {1, tostring(new)}
