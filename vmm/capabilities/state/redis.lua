-- What the shared-state scripts share. KEYS: the plugin's expiry set, size hash, usage hash,
-- and the value's key. Keys without a TTL have the expiry NO_EXPIRY (ms, ~285,000 years).
local expiry_set, sizes, usage, value_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local NO_EXPIRY = 9000000000000000

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function used()
  return tonumber(redis.call('HGET', usage, 'keys') or '0'),
         tonumber(redis.call('HGET', usage, 'bytes') or '0')
end

-- Drop the accounting of keys that have expired (their values expired by themselves).
local function purge(now)
  for _, key in ipairs(redis.call('ZRANGEBYSCORE', expiry_set, '-inf', now)) do
    local size = tonumber(redis.call('HGET', sizes, key) or '0')
    redis.call('HDEL', sizes, key)
    redis.call('ZREM', expiry_set, key)
    redis.call('HINCRBY', usage, 'keys', -1)
    redis.call('HINCRBY', usage, 'bytes', -size)
  end
end

-- Whether `key` fits at `size` bytes (what it had counts as freed), after dropping expired
-- keys if it did not at first.
local function room(now, key, size, max_keys, max_bytes)
  for attempt = 1, 2 do
    local keys, bytes = used()
    local old = redis.call('HGET', sizes, key)
    if old then keys, bytes = keys - 1, bytes - tonumber(old) end
    if keys + 1 <= max_keys and bytes + size <= max_bytes then return true end
    if attempt == 1 then purge(now) end
  end
  return false
end

local function account(key, size, expiry)
  local old = redis.call('HGET', sizes, key)
  if old then
    redis.call('HINCRBY', usage, 'bytes', size - tonumber(old))
  else
    redis.call('HINCRBY', usage, 'keys', 1)
    redis.call('HINCRBY', usage, 'bytes', size)
  end
  redis.call('HSET', sizes, key, size)
  redis.call('ZADD', expiry_set, expiry, key)
end

local function keep_until(expiry)
  if expiry < NO_EXPIRY then redis.call('PEXPIREAT', value_key, expiry) end
end
