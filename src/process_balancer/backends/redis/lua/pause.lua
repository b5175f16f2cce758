-- Pause a job: remember its count and set it to 0 in one step, so a resume cannot lose it.
-- KEYS: counts (hash), paused (hash), version
-- ARGV: job id, default count (the config's, used when no count was set at runtime), channel,
-- ceiling (max_workers); numbers as decimal strings (see set_count.lua).
-- Returns {status, value, ceiling}: 1 paused (value: the remembered count); 0 already paused
-- (value: the remembered count; nothing changed); -1 the stored count is not a count; -3 the
-- default is not a count; -4 the count is above the ceiling (nothing changed in any of them).
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

local ceiling = count(ARGV[4], 0, HARD_LIMIT) or HARD_LIMIT
local shown = string.format('%d', ceiling)
local remembered = redis.call('HGET', KEYS[2], ARGV[1])
if remembered then
  return {0, remembered, shown}
end
local current
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw then
  current = count(raw, 0, HARD_LIMIT)
  if current == nil then
    return {-1, raw, shown}
  end
else
  current = count(ARGV[2], 0, HARD_LIMIT)
  if current == nil then
    return {-3, ARGV[2], shown}
  end
end
current = string.format('%d', current)
if tonumber(current) > ceiling then
  return {-4, current, shown}
end
redis.call('HSET', KEYS[2], ARGV[1], current)
redis.call('HSET', KEYS[1], ARGV[1], 0)
redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[3], 'state')
return {1, current, shown}
