-- Resume a paused job: restore the count remembered by pause.lua and forget it, in one step.
-- KEYS: counts (hash), paused (hash), version; ARGV: job id, channel
-- Returns {1, count} resumed, {0} not paused, {-1, stored value} unreadable (nothing changed).
local remembered = redis.call('HGET', KEYS[2], ARGV[1])
if not remembered then
  return {0}
end
local n = tonumber(remembered)
if n == nil or n ~= math.floor(n) or n < 0 then
  return {-1, remembered}
end
redis.call('HSET', KEYS[1], ARGV[1], remembered)
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[2], 'state')
return {1, remembered}
