-- Resume a paused job: restore the count remembered by pause.lua and forget it, in one step.
-- KEYS: counts (hash), paused (hash), version
-- ARGV: job id, channel, ceiling (max_workers, a decimal string; see set_count.lua)
-- Returns {status, value, ceiling}: 1 resumed (value: the count); 0 not paused; -1 the
-- remembered value is not a count; -4 it is above the ceiling (nothing changed in both).
local HARD_LIMIT = 1000000
local function count(s, low, high)
  if type(s) ~= 'string' or #s > 8 or not string.find(s, '^%-?%d+$') then
    return nil
  end
  local n = tonumber(s)
  if n < low or n > high then
    return nil
  end
  return n
end

local ceiling = count(ARGV[3], 0, HARD_LIMIT) or HARD_LIMIT
local shown = string.format('%d', ceiling)
local remembered = redis.call('HGET', KEYS[2], ARGV[1])
if not remembered then
  return {0, '', shown}
end
local n = count(remembered, 0, HARD_LIMIT)
if n == nil then
  return {-1, remembered, shown}
end
if n > ceiling then
  return {-4, remembered, shown}
end
remembered = string.format('%d', n)
redis.call('HSET', KEYS[1], ARGV[1], remembered)
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[2], 'state')
return {1, remembered, shown}
