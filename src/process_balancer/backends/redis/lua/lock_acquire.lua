-- Take a worker lock. The lock's value names its holder, so a lock held by a member whose
-- membership has expired (a crashed process) can be taken over takeover_grace after its
-- deadline instead of waiting out the lock's TTL. The holder's membership is that of the text
-- before its first '#' (a holder "member#instance" is one run of process "member"). A process
-- may take over a lock that names itself, the very same holder text (it runs one worker per
-- slot; such a lock is left by a release or an acquire whose answer was lost). Fencing tokens
-- strictly increase per slot, also across a backend that restarts empty or goes back to an
-- older state: each is at least the server's clock in microseconds.
-- A lock of a partitioned job may be taken under its generation gate (see gate_refuses: it
-- is checked after the incarnation and before the lock's own rules).
-- KEYS: lock, fence counter, members (zset identity -> deadline ms), incarnation (hash),
--       departed (zset identity -> deadline ms), and with a gate: partitions (string, JSON
--       {job: [count, generation]}), the job's gate (hash: generation, blocked_until ms,
--       'lock:<name>' for each lock taken under that generation)
-- ARGV: token, holder identity, key ttl ms (the lock's ttl plus the grace), grace ms, and
--       with a gate: its generation, job id, lock name, the prefix of lock keys
-- Returns {1, fence} taken, {2, fence, previous holder} taken over from an expired holder,
-- {0} held by a live member (or refused by the gate), {3} the group has no incarnation of
-- this server yet (no heartbeat reached it since it lost the group's state, restarted or
-- took over), {4, ms} no lock is granted for that long after a new incarnation, {5, key,
-- value, ms} the lock key holds something this program never wrote (the slot is free when it
-- expires, in ms), {6, key, type, value} the stored partitions cannot be read (nothing
-- granted under a gate; value is '' for a key of another type than string), {7, key, what}
-- the gate could not be read and was replaced by one that grants nothing for the key ttl.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local grace = tonumber(ARGV[4])

-- A lock's incarnation and holder, nil when this program did not write it; the incarnation
-- is nil for a lock written by an earlier version (token, fence, holder).
local function parse(value)
  local lock_inc, owner = string.match(value, '^%S+ %d+ (%S+) (%S+)$')
  if owner == nil then
    return nil, string.match(value, '^%S+ %d+ (%S+)$')
  end
  return lock_inc, owner
end

-- The deadline (ms) of the member a holder belongs to, live or departed, or nil.
local function deadline_of(owner)
  local member = string.match(owner, '^[^#]*')
  local deadline = redis.call('ZSCORE', KEYS[3], member) or redis.call('ZSCORE', KEYS[5], member)
  return deadline and tonumber(deadline)
end

-- Generations, fencing counters and times stay below 2^53, where a double is exact.
local LIMIT = 9007199254740992
local function whole(x, low, high)
  return type(x) == 'number' and x == math.floor(x) and x >= low and x <= high
end

-- The generation the stored partitions give job (nil: none), or false, the key's type and
-- what it holds ('' unless a string) when it cannot be read, as the Python side's
-- parse_partitions decides.
local function stored_generation(key, job)
  local found = redis.call('TYPE', key)['ok']
  if found == 'none' then
    return nil
  elseif found ~= 'string' then
    return false, found, ''
  end
  local raw = redis.call('GET', key)
  local ok, data = pcall(cjson.decode, raw)
  if not ok or type(data) ~= 'table' or not string.match(raw, '^%s*{') then
    return false, found, raw
  end
  local generation = nil
  for name, entry in pairs(data) do
    if type(entry) ~= 'table' then
      return false, found, raw
    end
    local size = 0
    for _ in pairs(entry) do
      size = size + 1
    end
    local count = entry[1]
    if type(count) == 'string' and string.match(count, '^%-?%d+$') and #count <= 19 then
      count = tonumber(count)
    end
    if size ~= 2 or not whole(count, 0, 1000000) or not whole(entry[2], 1, LIMIT) then
      return false, found, raw
    end
    if name == job then
      generation = entry[2]
    end
  end
  return generation
end

-- A whole number below 2^53 written as plain decimal digits, or nil.
local function digits(text)
  if text and string.match(text, '^%d+$') and #text <= 16 and tonumber(text) < LIMIT then
    return tonumber(text)
  end
  return nil
end

-- The gate's generation and, for generation 0, the time (ms) before which it grants nothing;
-- nil when there is none; false and what it holds when it cannot be read.
local function read_gate(key)
  local found = redis.call('TYPE', key)['ok']
  if found == 'none' then
    return nil
  elseif found ~= 'hash' then
    return false, 'a ' .. found
  end
  local fields = redis.call('HMGET', key, 'generation', 'blocked_until')
  local generation = digits(fields[1])
  if generation == nil then
    if fields[1] then
      local shown = string.format('%q', string.sub(fields[1], 1, 40))
      return false, 'a hash whose generation is ' .. shown
    end
    return false, 'a hash without a generation'
  end
  if generation > 0 then
    return generation, 0
  end
  local blocked = digits(fields[2])
  if blocked == nil then
    return false, 'a hash of generation 0 without a time it grants nothing before'
  end
  return 0, blocked
end

-- Nobody may still run under lock key: it is absent, of an earlier incarnation, or its
-- holder's membership ended grace ago (or is unknown). A key this program did not write holds
-- the slot until it expires, as above (within the key ttl).
local function lock_free(key, incarnation, now, grace)
  local found = redis.call('TYPE', key)['ok']
  if found == 'none' then
    return true
  end
  local lock_inc, owner = nil, nil
  if found == 'string' then
    lock_inc, owner = parse(redis.call('GET', key))
  end
  if owner == nil then
    local left = redis.call('PTTL', key)
    if left < 0 or left > tonumber(ARGV[3]) then
      redis.call('PEXPIRE', key, tonumber(ARGV[3]))
    end
    return false
  end
  if lock_inc ~= nil and lock_inc ~= incarnation then
    return true
  end
  local deadline = deadline_of(owner)
  return not (deadline and deadline + grace > now)
end

-- Nil when a lock may be taken under the gate (generation ARGV[5] of job ARGV[6]) now, else
-- the reply refusing it. Moves the gate to a new generation once every lock taken under the
-- earlier one is free (a lock naming the caller itself counts as held), and replaces a gate
-- record it cannot read by one granting nothing for the key ttl: every holder under the old
-- one has stopped by then, since none can renew.
local function gate_refuses(incarnation, now, grace)
  local wanted = digits(ARGV[5])
  local generation, found, raw = stored_generation(KEYS[6], ARGV[6])
  if generation == false then
    return {6, KEYS[6], found, raw}
  end
  if wanted == nil or generation ~= wanted then
    return {0}
  end
  local gate = KEYS[7]
  local stored, blocked = read_gate(gate)
  if stored == false then
    redis.call('DEL', gate)
    redis.call('HSET', gate, 'generation', 0, 'blocked_until',
      string.format('%d', now + tonumber(ARGV[3])))
    return {7, gate, blocked} -- what it held
  end
  if stored == wanted then
    return nil
  end
  if stored == 0 and now < blocked then
    return {0}
  end
  if stored ~= nil and stored ~= 0 then
    for _, field in ipairs(redis.call('HKEYS', gate)) do
      local name = string.match(field, '^lock:(.+)$')
      if name and not lock_free(ARGV[8] .. name, incarnation, now, grace) then
        return {0}
      end
    end
  end
  redis.call('DEL', gate)
  redis.call('HSET', gate, 'generation', ARGV[5])
  return nil
end

local lock_type = redis.call('TYPE', KEYS[1])['ok']
local current = false
if lock_type == 'string' then
  current = redis.call('GET', KEYS[1])
end
local holder = nil
local lock_inc = nil
local legacy = false
if current then
  lock_inc, holder = parse(current)
  legacy = lock_inc == nil
end
if lock_type ~= 'none' and holder == nil then
  -- Not a lock this program wrote (a bad restore, a foreign tool). Whoever held the slot
  -- cannot renew through it and stops within the lock's ttl: the slot is free once the key
  -- expires, at the latest the key ttl after it was first seen here (checked first, so that
  -- this wait runs alongside the one for a new incarnation below).
  local left = redis.call('PTTL', KEYS[1])
  if left < 0 or left > tonumber(ARGV[3]) then
    redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
    left = tonumber(ARGV[3])
  end
  return {5, KEYS[1], current or ('a ' .. lock_type), left}
end
-- Group keys of another type are discarded by the next heartbeat; until then nothing is
-- granted.
local types = {'zset', 'hash', 'zset'}
for i = 3, 5 do
  local found = redis.call('TYPE', KEYS[i])['ok']
  if found ~= 'none' and found ~= types[i - 2] then
    return {3}
  end
end
local inc = redis.call('HMGET', KEYS[4], 'id', 'grants_at', 'server')
if not inc[1] then
  return {3}
end
-- An incarnation begun by another server: this one restarted (from an older snapshot) or was
-- promoted by a failover since, so the memberships and locks it holds may be older than what
-- the processes run by. Nothing is granted before a heartbeat has begun a new incarnation.
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)') or '?'
if inc[3] ~= run_id then
  return {3}
end
local grants_at = tonumber(inc[2] or '0') or 0
if now < grants_at + grace then
  return {4, grants_at + grace - now}
end
if legacy then
  lock_inc = inc[1]
end

-- The generation gate: nothing of a partitioned job runs beside a slot of another generation.
if ARGV[5] then
  local refused = gate_refuses(inc[1], now, grace)
  if refused then
    return refused
  end
end

local previous = false
if current then
  if holder ~= ARGV[2] and lock_inc == inc[1] then
    local deadline = deadline_of(holder)
    if deadline and deadline + grace > now then
      return {0}
    end
    previous = holder
  end
end
-- A counter that is not a number (a bad restore, a foreign tool) counts as 0: the server
-- clock still puts the token past every earlier one, as after a restart that lost it.
-- Only a whole number a double holds exactly (below 2^53) is continued.
local stored = 0
if redis.call('TYPE', KEYS[2])['ok'] == 'string' then
  local raw = redis.call('GET', KEYS[2])
  if string.match(raw, '^%d+$') and #raw <= 16 and tonumber(raw) < LIMIT then
    stored = tonumber(raw)
  end
end
local fence = math.max(stored + 1, tonumber(t[1]) * 1000000 + tonumber(t[2]))
local fence_text = string.format('%.0f', fence)
redis.call('SET', KEYS[2], fence_text)
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. fence_text .. ' ' .. inc[1] .. ' ' .. ARGV[2],
  'PX', tonumber(ARGV[3]))
if ARGV[5] then
  redis.call('HSET', KEYS[7], 'lock:' .. ARGV[7], 1)
end
if previous then
  return {2, fence_text, previous}
end
return {1, fence_text}
