-- Begin a new incarnation of the group if it is still in the one the caller knows (a caller
-- saw the backend's clock jump): every process cuts its slots at its next heartbeat, and no
-- worker lock is granted for hold ms, by when every holder of the old one has stopped.
-- KEYS: incarnation (hash), version; ARGV: expected incarnation id, hold ms, channel
-- Returns the current incarnation id.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local current = redis.call('HGET', KEYS[1], 'id')
if current ~= ARGV[1] then
  return current or ''
end
local server = redis.call('INFO', 'server')
local run_id = string.match(server, 'run_id:(%w+)') or '?'
local incarnation = string.sub(run_id, 1, 8) .. '.' .. t[1] .. string.format('%06d', tonumber(t[2]))
redis.call('HSET', KEYS[1], 'id', incarnation, 'server', run_id, 'grants_at',
  now + tonumber(ARGV[2]))
if tonumber(redis.call('GET', KEYS[2]) or '0') ~= nil then
  redis.call('INCR', KEYS[2])
end
redis.call('PUBLISH', ARGV[3], 'state')
return incarnation
