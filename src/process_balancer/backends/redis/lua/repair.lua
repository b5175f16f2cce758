-- Rebuild a group's derived state in one atomic step (process-balancer repair --yes).
-- KEYS: members, traits, info, version, assignment_version, assignment, unplaced, then any
--       further key an operation below names by its index
-- ARGV: channel, number of operations, then per operation 4 values:
--       'del', key index, type it was found with, ''  -- delete it if it still has that type
--       'hdel', key index, field, value               -- delete the field if it is unchanged
--       'zero', key index, field, value               -- set the field to 0 if it is unchanged
--       'unset', key index, value, ''                 -- delete a string key if it is unchanged
--       'member', holder identity, ms to live, ''     -- a lock holder kept as a member
-- Counts, pauses and partitions are only ever touched by 'hdel'/'del'/'unset' of values found
-- unreadable; worker locks, fencing counters and generation gates are never among the keys.
-- Returns the new state version: past every version the group used (the old one plus one, or
-- the server clock in ms if that is more), so no process takes a new assignment for an old one.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local done = 0
local n = tonumber(ARGV[2])
for i = 0, n - 1 do
  local op, a, b, c = ARGV[3 + i * 4], ARGV[4 + i * 4], ARGV[5 + i * 4], ARGV[6 + i * 4]
  if op == 'del' then
    local key = KEYS[tonumber(a)]
    if redis.call('TYPE', key)['ok'] == b then
      redis.call('DEL', key)
      done = done + 1
    end
  elseif op == 'hdel' then
    local key = KEYS[tonumber(a)]
    if redis.call('TYPE', key)['ok'] == 'hash' and redis.call('HGET', key, b) == c then
      redis.call('HDEL', key, b)
      done = done + 1
    end
  elseif op == 'zero' then
    local key = KEYS[tonumber(a)]
    if redis.call('TYPE', key)['ok'] == 'hash' and redis.call('HGET', key, b) == c then
      redis.call('HSET', key, b, 0)
      done = done + 1
    end
  elseif op == 'unset' then
    local key = KEYS[tonumber(a)]
    if redis.call('TYPE', key)['ok'] == 'string' and redis.call('GET', key) == b then
      redis.call('DEL', key)
      done = done + 1
    end
  elseif op == 'member' then
    local found = redis.call('TYPE', KEYS[1])['ok']
    if found == 'zset' or found == 'none' then
      redis.call('ZADD', KEYS[1], 'NX', now + tonumber(b), a)
    end
  end
end
local version = now
if redis.call('TYPE', KEYS[4])['ok'] == 'string' then
  local old = redis.call('GET', KEYS[4])
  -- Only a version the Python side reads as one (at most 2^53 either way) is continued.
  if string.match(old, '^%-?%d+$') and #old <= 17 then
    local n = tonumber(old)
    if math.abs(n) <= 9007199254740992 and n + 1 > version then
      version = n + 1
    end
  end
end
redis.call('DEL', KEYS[4], KEYS[5], KEYS[6], KEYS[7])
redis.call('SET', KEYS[4], string.format('%d', version))
redis.call('PUBLISH', ARGV[1], 'state')
return {version, done}
