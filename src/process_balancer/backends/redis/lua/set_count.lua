-- Set or change a job's worker count; refuses (writes nothing) a count that is not an integer
-- from 0 to the ceiling. A count set while the job is paused ends the pause: the operator's
-- latest word wins; unless the caller asks to set it only while the job is not paused (the
-- autoscaler): then a paused job is left as it is.
-- KEYS: counts (hash), version, paused (hash)
-- ARGV: job id, 'to' or 'by', value, default count, channel, ceiling (max_workers), and '1'
-- to write nothing while the job is paused (absent: set it all the same); numbers as decimal
-- strings, parsed here: Lua numbers are doubles and would round big ones.
-- Returns {status, value, ceiling}: 1 stored (value: the new count); 2 the job is paused and
-- nothing was written (only with ARGV[7] '1', checked after the value); 0 would be negative
-- (value: the current count); -1 the stored count is not a count (value: what is stored);
-- -2 the given value is not an integer in range; -3 the default is not a count; -4 the result
-- would be above the ceiling (value: the result). See backends/counts.py.
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

local ceiling = count(ARGV[6], 0, HARD_LIMIT) or HARD_LIMIT
local shown = string.format('%d', ceiling)
local new
if ARGV[2] == 'to' then
  new = count(ARGV[3], 0, ceiling)
  if new == nil then
    return {-2, ARGV[3], shown}
  end
else
  local by = count(ARGV[3], -HARD_LIMIT, HARD_LIMIT)
  if by == nil then
    return {-2, ARGV[3], shown}
  end
  local current
  local raw = redis.call('HGET', KEYS[1], ARGV[1])
  if raw then
    current = count(raw, 0, HARD_LIMIT)
    if current == nil then
      return {-1, raw, shown}
    end
  else
    current = count(ARGV[4], 0, ceiling)
    if current == nil then
      return {-3, ARGV[4], shown}
    end
  end
  new = current + by
  if new < 0 then
    return {0, string.format('%d', current), shown}
  end
  if new > ceiling then
    return {-4, string.format('%d', new), shown}
  end
end
if ARGV[7] == '1' and redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then
  return {2, '', shown}
end
new = string.format('%d', new)
redis.call('HSET', KEYS[1], ARGV[1], new)
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[5], 'state')
return {1, new, shown}
