-- Refresh one member's heartbeat, prune expired members, return what changed.
-- Bounded work when membership is unchanged: a few O(log P) commands, whatever P is.
-- KEYS: members (zset identity -> deadline ms), traits (hash), info (hash), version,
--       assignment_version, assignment (hash), commands list of this member,
--       incarnation (hash: id, server, grants_at), departed (zset identity -> deadline ms),
--       partitions (string: JSON {job: [count, generation]}, written with the assignment)
-- ARGV: identity, traits json, info json, expiry ms, seen assignment version, channel,
--       most expired members pruned per call, hold ms (no worker lock is granted this long
--       after a new incarnation), incarnation the caller knows ('' if none), highest state
--       version the caller has seen
-- Returns {joined, changed, version, assignment version, slots or false, commands,
--          ms to the soonest other deadline or -1, incarnation id, server time ms,
--          grants_at ms, why a new incarnation began ('' if none), partitions}
-- partitions is given with the slots (false with none): the stored JSON, false when none
-- is stored, or {type} when the key holds another type (the caller refuses it: it is never
-- discarded here, since the generations in it must keep increasing).
-- Keys holding something this script cannot read are discarded (see below).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local identity = ARGV[1]
local hold = tonumber(ARGV[8])
local known = ARGV[9]
local changed = 0

-- Group state this script cannot read (a key of another type, a version that is not an
-- integer: a bad restore, a foreign tool) is derived state: it is discarded and rebuilt, as
-- after a backend that forgot the group, so a new incarnation begins with the hold below.
-- The caller's command list is discarded alone. Counts, pauses and locks are not touched.
local expected = {'zset', 'hash', 'hash', 'string', 'string', 'hash', 'list', 'hash', 'zset'}
local discarded = {}
for i = 1, 9 do
  local found = redis.call('TYPE', KEYS[i])['ok']
  local bad = found ~= 'none' and found ~= expected[i]
  local what = 'a ' .. found
  if not bad and found == 'string' then
    local value = redis.call('GET', KEYS[i])
    bad = not string.match(value, '^%-?%d+$') or #value > 17
    what = string.format('%q', string.sub(value, 1, 40))
  end
  if bad then
    redis.call('DEL', KEYS[i])
    if i ~= 7 then
      discarded[#discarded + 1] = KEYS[i] .. ' held ' .. what
    end
  end
end

local raw_version = redis.call('GET', KEYS[4])
local stored_version = tonumber(raw_version or '0')
local raw_av = redis.call('GET', KEYS[5]) or '0'
if #discarded > 0 then
  -- Past every version a process may have seen, so none mistakes new state for old.
  stored_version = math.max(stored_version, now, tonumber(ARGV[10]) or 0)
  redis.call('SET', KEYS[4], string.format('%d', stored_version))
end

-- The group's incarnation. A new one begins when this server has never seen the group (or
-- forgot it), when the server itself changed (a restart loads an older snapshot or nothing; a
-- failover promotes a replica that may have missed writes), or when a caller has seen a
-- newer state than the one stored. Processes that held slots in the old incarnation may still
-- run them, so no worker lock is granted before grants_at: by then their memberships, which
-- this server can no longer see, must have lapsed.
local server = redis.call('INFO', 'server')
local run_id = string.match(server, 'run_id:(%w+)') or '?'
local uptime_ms = (tonumber(string.match(server, 'uptime_in_seconds:(%d+)')) or 0) * 1000
local inc = redis.call('HMGET', KEYS[8], 'id', 'server', 'grants_at')
local why = ''
if #discarded > 0 then
  why = 'unreadable group state was discarded: ' .. table.concat(discarded, ', ')
elseif not inc[1] then
  if known ~= '' then
    why = 'the backend no longer has the group state'
  elseif uptime_ms < hold then
    why = 'the backend server has just started'
  end
elseif inc[2] ~= run_id then
  why = 'the backend server changed (a restart or a failover)'
elseif known == inc[1] and stored_version < tonumber(ARGV[10]) then
  why = 'the backend state went back to an older version'
end
local grants_at = tonumber(inc[3] or '0') or 0
local incarnation = inc[1]
if not inc[1] or why ~= '' then
  incarnation = string.sub(run_id, 1, 8) .. '.' .. t[1] .. string.format('%06d', tonumber(t[2]))
  grants_at = 0
  if why ~= '' then
    grants_at = now + hold
  end
  redis.call('DEL', KEYS[8])
  redis.call('HSET', KEYS[8], 'id', incarnation, 'server', run_id, 'grants_at', grants_at)
  changed = 1
end

local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0,
  tonumber(ARGV[7]))
for i = 1, #expired, 2 do
  local member = expired[i]
  if member ~= identity then
    redis.call('ZREM', KEYS[1], member)
    redis.call('HDEL', KEYS[2], member)
    redis.call('HDEL', KEYS[3], member)
    -- Remembered so that its worker locks are taken over only takeover_grace after it.
    redis.call('ZADD', KEYS[9], expired[i + 1], member)
    changed = 1
  end
end
if changed == 1 then
  redis.call('ZREMRANGEBYSCORE', KEYS[9], '-inf', now - 3600000)
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

local version = stored_version
if changed == 1 then
  version = redis.call('INCR', KEYS[4])
  redis.call('PUBLISH', ARGV[6], 'state')
end

local slots = false
local partitions = false
if raw_av ~= ARGV[5] then
  slots = redis.call('HGET', KEYS[6], identity) or '{}'
  local found = redis.call('TYPE', KEYS[10])['ok']
  if found == 'string' then
    partitions = redis.call('GET', KEYS[10])
  elseif found ~= 'none' then
    partitions = {found}
  end
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
return {joined, changed, version, raw_av, slots, commands, next_expiry, incarnation, now,
  grants_at, why, partitions}
