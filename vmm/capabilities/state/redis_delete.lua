-- delete. ARGV: key.
local key = ARGV[1]
local size = redis.call('HGET', sizes, key)
redis.call('DEL', value_key)
if size then
  redis.call('HDEL', sizes, key)
  redis.call('ZREM', expiry_set, key)
  redis.call('HINCRBY', usage, 'keys', -1)
  redis.call('HINCRBY', usage, 'bytes', -tonumber(size))
end
return 'ok'
