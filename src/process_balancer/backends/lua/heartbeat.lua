-- Refresh one member's heartbeat, prune expired members, return what changed.
-- Bounded work when membership is unchanged: a few O(log P) commands, whatever P is.
-- KEYS: members (zset identity -> deadline ms), traits (hash), info (hash), version,
--       assignment_version, assignment (hash), commands list of this member
-- ARGV: identity, traits json, info json, expiry ms, seen assignment version, channel,
--       most expired members pruned per call
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local identity = ARGV[1]
local changed = 0

local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[7]))
for _, member in ipairs(expired) do
  if member ~= identity then
    redis.call('ZREM', KEYS[1], member)
    redis.call('HDEL', KEYS[2], member)
    redis.call('HDEL', KEYS[3], member)
    changed = 1
  end
end

-- A member whose deadline passed is treated as new: peers may already have taken its locks.
local old = redis.call('ZSCORE', KEYS[1], identity)
local joined = 0
if not old or tonumber(old) <= now then
  joined = 1
  changed = 1
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), identity)

if redis.call('HGET', KEYS[2], identity) ~= ARGV[2] then
  redis.call('HSET', KEYS[2], identity, ARGV[2])
  changed = 1
end
redis.call('HSET', KEYS[3], identity, ARGV[3])

local version
if changed == 1 then
  version = redis.call('INCR', KEYS[4])
  redis.call('PUBLISH', ARGV[6], 'state')
else
  version = tonumber(redis.call('GET', KEYS[4]) or '0')
end

local av = redis.call('GET', KEYS[5]) or '0'
local slots = false
if av ~= ARGV[5] then
  slots = redis.call('HGET', KEYS[6], identity) or '{}'
end

local commands = redis.call('LRANGE', KEYS[7], 0, -1)
if #commands > 0 then
  redis.call('DEL', KEYS[7])
end
-- The soonest deadline of another member: the caller wakes then to prune it if it is dead.
local next_expiry = -1
local soonest = redis.call('ZRANGE', KEYS[1], 0, 1, 'WITHSCORES')
for i = 1, #soonest, 2 do
  if soonest[i] ~= identity then
    next_expiry = math.max(0, tonumber(soonest[i + 1]) - now)
    break
  end
end
return {joined, changed, version, av, slots, commands, next_expiry}
