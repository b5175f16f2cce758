-- One consistent read of everything the assignment is computed from.
-- KEYS: members, traits, info, version, assignment_version, assignment, counts, unplaced
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {
  now,
  redis.call('GET', KEYS[4]) or '0',
  redis.call('GET', KEYS[5]) or '0',
  redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES'),
  redis.call('HGETALL', KEYS[2]),
  redis.call('HGETALL', KEYS[3]),
  redis.call('HGETALL', KEYS[7]),
  redis.call('HGETALL', KEYS[6]),
  redis.call('GET', KEYS[8]) or '{}',
}
