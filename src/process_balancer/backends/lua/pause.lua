-- Pause a job: remember its count and set it to 0 in one step, so a resume cannot lose it.
-- KEYS: counts (hash), paused (hash), version
-- ARGV: job id, default count (the config's, used when no count was set at runtime), channel
-- Returns {1, remembered count} paused, {0, remembered count} already paused (nothing
-- changed), {-1, stored value} the stored count is not an integer (nothing changed).
local remembered = redis.call('HGET', KEYS[2], ARGV[1])
if remembered then
  return {0, remembered}
end
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local n = tonumber(current)
  if n == nil or n ~= math.floor(n) or n < 0 then
    return {-1, current}
  end
else
  current = ARGV[2]
end
redis.call('HSET', KEYS[2], ARGV[1], current)
redis.call('HSET', KEYS[1], ARGV[1], 0)
redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[3], 'state')
return {1, current}
