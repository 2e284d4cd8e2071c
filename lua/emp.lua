#!lua name=emp
--[[
The EMP queue's Redis Function library: one function per operation on a job.

Conventions
- ARGV[1] of every function is the queue's key base, e.g. "emp:{default}". Keys the caller can name
  come in KEYS. Keys that depend on a job's stored fields (its class, customer, workflow), which
  only the claim, cancel and reap discover inside the function, are derived from the base with the
  suffixes of packages/core/src/emp_core/keys.py; they carry the same hash tag, so every function
  stays within one Cluster slot.
- Errors are "EMP_<KIND> <field> <message>"; the Python wrapper turns them into EmpError classes.
- Every function validates all of its input before its first write: Redis does not roll back a
  function that fails half-way, so "nothing written" must hold by construction.
- Times are Redis server time in milliseconds (one clock for every worker).
]]

local VERSION = '5'

-- Score layout: (PRIORITY_MAX - priority) * 2^42 + submit order; see emp_core.jobs.job.pending_score.
local PRIORITY_MAX = 1000
local SEQ_SPAN = 2 ^ 42
-- How many heads of one pending set a claim inspects before it switches to the binary search that
-- skips a long run of denied customers (see first_allowed_rank).
local SCAN_LIMIT = 8
local EVENT_FIELDS = {'type', 'status', 'at', 'attempt', 'worker_id', 'progress', 'message', 'error',
  'reason'}

-- Caches local to this library load. Requirement classes are immutable (the id is a hash of the
-- requirements), so a decoded class, and whether a given capability set matches it, never go stale.
local caps_cache, caps_count = {}, 0
local class_cache, class_count = {}, 0
local CACHE_MAX = 4096

---------------------------------------------------------------------------------------------------
-- small helpers

local function bad(kind, field, message)
  error({err = 'EMP_' .. kind .. ' ' .. field .. ' ' .. message})
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function int_arg(value, field, lo, hi)
  local n = tonumber(value)
  -- math.floor(inf) == inf, so infinities need their own test.
  if n == nil or n ~= math.floor(n) or n == math.huge or n == -math.huge
      or (lo ~= nil and n < lo) or (hi ~= nil and n > hi) then
    local range = ''
    if lo ~= nil and hi ~= nil then range = ' from ' .. lo .. ' to ' .. hi
    elseif lo ~= nil then range = ' of at least ' .. lo end
    bad('INVALID', field, 'must be an integer' .. range .. ', got ' .. tostring(value))
  end
  return n
end

local function num_arg(value, field, lo, hi)
  local n = tonumber(value)
  if n == nil or n ~= n or (lo ~= nil and n < lo) or (hi ~= nil and n > hi) then
    bad('INVALID', field, 'must be a number from ' .. lo .. ' to ' .. hi .. ', got ' .. tostring(value))
  end
  return n
end

-- Callers that pass too few keys would make a write land on a nil key half-way through.
local function need_keys(keys, n)
  if #keys ~= n then bad('INVALID', 'keys', 'expected ' .. n .. ' keys, got ' .. #keys) end
end

-- A finished job waits in the archive outbox until the projector has copied it into SQL.
local function to_archive(finished, job_id, now)
  redis.call('ZADD', finished, now, job_id)
end

local function fmt_int(n)
  return string.format('%.0f', n)
end

local function hash_to_table(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end

local function decode_json(text, field)
  local ok, value = pcall(cjson.decode, text)
  if not ok or type(value) ~= 'table' then bad('INVALID', field, 'is not a JSON object') end
  return value
end

-- Append an event to the job's capped stream and publish it on the queue's events channel.
local function emit(base, job_id, events_key, maxlen, service, event)
  local args = {'XADD', events_key, 'MAXLEN', '~', maxlen, '*'}
  for _, name in ipairs(EVENT_FIELDS) do
    local value = event[name]
    if value ~= nil and value ~= '' then
      args[#args + 1] = name
      args[#args + 1] = tostring(value)
    end
  end
  local event_id = redis.call(unpack(args))
  event.job_id = job_id
  event.event_id = event_id
  event.service = service
  redis.call('PUBLISH', base .. ':events', cjson.encode(event))
  return event_id
end

---------------------------------------------------------------------------------------------------
-- matching: the rules of emp_core.jobs.matching, kept in step by test_matching_contract.py

local function is_array(t)
  return next(t) == nil or t[1] ~= nil
end

local function resolve(tree, path)
  local node = tree
  for part in string.gmatch(path, '[^.]+') do
    if type(node) ~= 'table' or is_array(node) then return nil end
    node = node[part]
    if node == nil or node == cjson.null then return nil end
  end
  return node
end

local function equal(a, b)
  return type(a) == type(b) and a == b
end

local function contains(list, item)
  for _, v in ipairs(list) do
    if equal(v, item) then return true end
  end
  return false
end

local function as_list(v)
  if type(v) == 'table' and is_array(v) then return v end
  return {v}
end

local satisfies
satisfies = function(have, want)
  if have == nil then return false end
  if type(want) == 'table' then
    if next(want) == nil then return true end
    if is_array(want) then
      local held = as_list(have)
      for _, item in ipairs(want) do
        if not contains(held, item) then return false end
      end
      return true
    end
    for key, sub in pairs(want) do
      if not satisfies(resolve(have, key), sub) then return false end
    end
    return true
  end
  if type(want) == 'number' then return type(have) == 'number' and have >= want end
  return equal(have, want)
end

local present
present = function(have, banned)
  if have == nil then return false end
  if type(banned) == 'table' then
    if is_array(banned) then
      local held = as_list(have)
      for _, item in ipairs(banned) do
        if contains(held, item) then return true end
      end
      return false
    end
    for key, sub in pairs(banned) do
      if present(resolve(have, key), sub) then return true end
    end
    return false
  end
  return equal(have, banned)
end

local function class_matches(service, req, caps)
  local hw = caps.hardware
  if req.gpu_memory_gb and hw.gpu_memory_gb < req.gpu_memory_gb then return false end
  if req.cpu_cores and hw.cpu_cores < req.cpu_cores then return false end
  if req.ram_gb and hw.ram_gb < req.ram_gb then return false end
  local models = caps.models[service] or {}
  for _, m in ipairs(req.models or {}) do
    if not contains(models, m) then return false end
  end
  if req.customer_isolation == 'strict' and caps.customer_isolation ~= 'strict' then return false end
  for path, want in pairs(req.capabilities or {}) do
    if not satisfies(resolve(caps.capabilities, path), want) then return false end
  end
  local exclude = req.exclude or {}
  for _, m in ipairs(exclude.models or {}) do
    if contains(models, m) then return false end
  end
  for path, banned in pairs(exclude.capabilities or {}) do
    if present(resolve(caps.capabilities, path), banned) then return false end
  end
  return true
end

-- Decoded capabilities by content hash, with the customer lists turned into sets and nulls into nil.
local function load_caps(text)
  local digest = redis.sha1hex(text)
  local caps = caps_cache[digest]
  if caps then return caps end
  caps = decode_json(text, 'capabilities')
  if type(caps.services) ~= 'table' or type(caps.worker_id) ~= 'string' then
    bad('INVALID', 'capabilities', 'needs worker_id and services')
  end
  for _, name in ipairs({'allowed_customers', 'workflow_id', 'machine_id'}) do
    if caps[name] == cjson.null then caps[name] = nil end
  end
  caps.hardware = caps.hardware or {}
  for _, name in ipairs({'gpu_memory_gb', 'cpu_cores', 'ram_gb'}) do
    caps.hardware[name] = tonumber(caps.hardware[name]) or 0
  end
  caps.models = caps.models or {}
  caps.capabilities = caps.capabilities or {}
  caps.denied = {}
  caps.denied_list = {}
  for _, c in ipairs(caps.denied_customers or {}) do
    caps.denied[c] = true
    caps.denied_list[#caps.denied_list + 1] = c
  end
  if caps.allowed_customers then
    caps.allowed = {}
    for _, c in ipairs(caps.allowed_customers) do caps.allowed[c] = true end
  end
  caps.matches = {}
  if caps_count >= CACHE_MAX then caps_cache, caps_count = {}, 0 end
  caps_cache[digest] = caps
  caps_count = caps_count + 1
  return caps
end

local function class_def(registry, class_id)
  local req = class_cache[class_id]
  if req then return req end
  local text = redis.call('HGET', registry, class_id)
  if not text then return nil end
  req = cjson.decode(text)
  if class_count >= CACHE_MAX then class_cache, class_count = {}, 0 end
  class_cache[class_id] = req
  class_count = class_count + 1
  return req
end

---------------------------------------------------------------------------------------------------
-- the pending index

-- Put a job into the pending sets of its class (and of its customer and workflow).
local function index_pending(k, job_id, score, customer, workflow, service, class_id, reqs)
  redis.call('ZADD', k.pending, score, job_id)
  if customer ~= '' then redis.call('ZADD', k.pending .. ':cust:' .. customer, score, job_id) end
  if workflow ~= '' then redis.call('ZADD', k.pending .. ':wf:' .. workflow, score, job_id) end
  redis.call('HSET', k.registry, class_id, reqs)
  redis.call('HINCRBY', k.count, service, 1)
end

local function unindex_pending(k, job_id, customer, workflow, service, class_id)
  if redis.call('ZREM', k.pending, job_id) == 0 then return false end
  if customer ~= '' then redis.call('ZREM', k.pending .. ':cust:' .. customer, job_id) end
  if workflow ~= '' then redis.call('ZREM', k.pending .. ':wf:' .. workflow, job_id) end
  if redis.call('EXISTS', k.pending) == 0 then redis.call('HDEL', k.registry, class_id) end
  redis.call('HINCRBY', k.count, service, -1)
  return true
end

local function derived_keys(base, service, class_id)
  return {
    pending = base .. ':pending:' .. class_id,
    registry = base .. ':classes:' .. service,
    count = base .. ':pending_count',
  }
end

local JOB_INDEX_FIELDS = {'service', 'class_id', 'requirements', 'score', 'customer_id', 'workflow_id'}

-- Return a job to pending (retry due, lease expired, released), announce it to idle workers.
local function requeue(base, job_id, maxlen, reason, extra)
  local jk = base .. ':job:' .. job_id
  local f = redis.call('HMGET', jk, unpack(JOB_INDEX_FIELDS))
  local service, class_id = f[1], f[2]
  local k = derived_keys(base, service, class_id)
  index_pending(k, job_id, f[4], f[5], f[6], service, class_id, f[3])
  local fields = {'status', 'pending', 'worker_id', '', 'token', '', 'lease_deadline', ''}
  for _, v in ipairs(extra or {}) do fields[#fields + 1] = v end
  redis.call('HSET', jk, unpack(fields))
  local attempt = redis.call('HGET', jk, 'attempts')
  emit(base, job_id, base .. ':events:' .. job_id, maxlen, service,
    {type = 'requeued', status = 'pending', at = now_ms(), reason = reason, attempt = attempt})
  redis.call('PUBLISH', base .. ':wake:' .. service, job_id)
end

-- Move retries whose backoff is over back to pending; bounded per call.
local function promote_due(base, delayed, now, limit, maxlen)
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, limit)
  for _, job_id in ipairs(due) do
    redis.call('ZREM', delayed, job_id)
    requeue(base, job_id, maxlen, 'retry_due')
  end
  return #due
end

---------------------------------------------------------------------------------------------------
-- claim: choosing a job

-- Among the jobs of one pending set with ranks up to the binary search's answer, the first whose
-- customer is not denied. Counting denied jobs by score with the per-customer sets makes this
-- O(log N) ZCOUNTs instead of a walk over a long run of denied jobs. Equal scores occur only
-- within one workflow, which has one customer; the second term counts such ties exactly.
local function first_allowed_rank(base, zkey, denied_keys, denied)
  local lo, hi = 0, redis.call('ZCARD', zkey) - 1
  local found = nil
  while lo <= hi do
    local mid = math.floor((lo + hi) / 2)
    local entry = redis.call('ZRANGE', zkey, mid, mid, 'WITHSCORES')
    local score = entry[2]
    local denied_upto = 0
    for _, dk in ipairs(denied_keys) do
      denied_upto = denied_upto + redis.call('ZCOUNT', dk, '-inf', '(' .. score)
    end
    local customer = redis.call('HGET', base .. ':job:' .. entry[1], 'customer_id')
    if customer and denied[customer] then
      denied_upto = denied_upto + mid - redis.call('ZCOUNT', zkey, '-inf', '(' .. score) + 1
    end
    if mid + 1 - denied_upto >= 1 then
      found = mid
      hi = mid - 1
    else
      lo = mid + 1
    end
  end
  return found
end

-- The best job of one pending set this worker may take: returns id, score, and a wait hint (ms)
-- when a job is held back for another worker.
local function eligible_head(base, zkey, caps, now)
  local heads = redis.call('ZRANGE', zkey, 0, SCAN_LIMIT - 1, 'WITHSCORES')
  local hint = nil
  local all_denied = true
  for i = 1, #heads, 2 do
    local job_id = heads[i]
    local m = redis.call('HMGET', base .. ':job:' .. job_id, 'customer_id', 'avoid_worker',
      'avoid_until')
    local customer, avoid, avoid_until = m[1] or '', m[2], tonumber(m[3])
    if caps.allowed and not caps.allowed[customer] then
      -- Only a workflow's set gets here (an allow-list worker otherwise reads the sets of its
      -- allowed customers), and a workflow has one customer: nothing in this set is admitted.
      return nil, nil, hint
    end
    if not (customer ~= '' and caps.denied[customer]) then
      all_denied = false
      if avoid == caps.worker_id and avoid_until and avoid_until > now then
        -- This worker failed the job last time: leave it to another worker for a grace period.
        local wait = avoid_until - now
        if hint == nil or wait < hint then hint = wait end
      else
        return job_id, heads[i + 1], hint
      end
    end
  end
  if not all_denied or #heads < 2 * SCAN_LIMIT then return nil, nil, hint end
  -- The first SCAN_LIMIT jobs all belong to denied customers: search past the run.
  local pending = zkey
  local denied_keys = {}
  for _, c in ipairs(caps.denied_list) do
    denied_keys[#denied_keys + 1] = pending .. ':cust:' .. c
  end
  local rank = first_allowed_rank(base, zkey, denied_keys, caps.denied)
  if rank == nil then return nil, nil, hint end
  local entry = redis.call('ZRANGE', zkey, rank, rank, 'WITHSCORES')
  local m = redis.call('HMGET', base .. ':job:' .. entry[1], 'avoid_worker', 'avoid_until',
    'customer_id')
  if m[1] == caps.worker_id and tonumber(m[2]) and tonumber(m[2]) > now then
    return nil, nil, hint
  end
  -- The count above reads per-customer subsets of the class set; a workflow's set has none, so
  -- check the answer itself rather than trust it.
  if m[3] and caps.denied[m[3]] then return nil, nil, hint end
  return entry[1], entry[2], hint
end

-- The pending sets of one class that this worker reads: its workflow's, its allowed customers',
-- or the whole class.
local function candidate_sets(pending, caps)
  if caps.workflow_id then return {pending .. ':wf:' .. caps.workflow_id} end
  if caps.allowed_customers then
    local sets = {}
    for _, c in ipairs(caps.allowed_customers) do
      if not caps.denied[c] then sets[#sets + 1] = pending .. ':cust:' .. c end
    end
    return sets
  end
  return {pending}
end

local function better(score, job_id, best_score, best_id)
  if best_id == nil then return true end
  local a, b = tonumber(score), tonumber(best_score)
  return a < b or (a == b and job_id < best_id)
end

---------------------------------------------------------------------------------------------------
-- functions

-- KEYS: per job [job, events, seq, classes registry, pending, pending_count, workflow, customer jobs]
-- ARGV: base, njobs, events_maxlen, retention_s, then per job 14 fields (see SUBMIT_FIELDS).
local SUBMIT_FIELDS = {'id', 'service', 'priority', 'payload', 'requirements', 'class_id',
  'customer_id', 'workflow_id', 'step', 'total_steps', 'max_attempts', 'timeout_s', 'traceparent',
  'loras'}
local SUBMIT_KEYS = 8

local function emp_submit(keys, args)
  local base = args[1]
  local n = int_arg(args[2], 'jobs', 1, 100000)
  local maxlen = int_arg(args[3], 'events_maxlen', 1)
  local retention = int_arg(args[4], 'retention_s', 1)
  local width = #SUBMIT_FIELDS
  if #args ~= 4 + n * width or #keys ~= n * SUBMIT_KEYS then
    bad('INVALID', 'arguments', 'expected ' .. n .. ' jobs of ' .. SUBMIT_KEYS .. ' keys and '
      .. width .. ' values each')
  end
  -- Validate every job before writing anything.
  local jobs = {}
  local new_workflows = {}
  for i = 1, n do
    local j = {}
    for f, name in ipairs(SUBMIT_FIELDS) do j[name] = args[4 + (i - 1) * width + f] end
    local k = (i - 1) * SUBMIT_KEYS
    j.keys = {job = keys[k + 1], events = keys[k + 2], seq = keys[k + 3], registry = keys[k + 4],
      pending = keys[k + 5], count = keys[k + 6], workflow = keys[k + 7], customer = keys[k + 8]}
    j.priority = int_arg(j.priority, 'priority', 0, PRIORITY_MAX)
    j.max_attempts = int_arg(j.max_attempts, 'max_attempts', 1, 100)
    if j.step ~= '' then int_arg(j.step, 'step', 1) end
    if j.total_steps ~= '' then int_arg(j.total_steps, 'total_steps', 1) end
    num_arg(j.timeout_s, 'timeout_s', 0, 7 * 24 * 3600)
    if j.id == '' or j.service == '' or j.class_id == '' then
      bad('INVALID', 'id', 'id, service and class_id are required')
    end
    decode_json(j.requirements, 'requirements')
    if string.sub(j.payload, 1, 1) ~= '{' then bad('INVALID', 'payload', 'is not a JSON object') end
    if string.sub(j.loras, 1, 1) ~= '[' then bad('INVALID', 'loras', 'is not a JSON array') end
    if redis.call('EXISTS', j.keys.job) == 1 then
      bad('CONFLICT', 'id', 'job ' .. j.id .. ' already exists')
    end
    if j.workflow_id ~= '' then
      local owner = new_workflows[j.workflow_id]
      if owner == nil then
        owner = redis.call('HGET', j.keys.workflow, 'customer_id')
        if owner then new_workflows[j.workflow_id] = owner
        else new_workflows[j.workflow_id] = j.customer_id end
      end
      if owner and owner ~= j.customer_id then
        bad('INVALID', 'workflow_id', 'workflow ' .. j.workflow_id
          .. ' belongs to another customer; a workflow has one customer')
      end
    end
    jobs[i] = j
  end

  local now = now_ms()
  local last = redis.call('INCRBY', jobs[1].keys.seq, n)
  local woken = {}
  local ids = {}
  for i, j in ipairs(jobs) do
    local seq = last - n + i
    local priority, order = j.priority, seq
    if j.workflow_id ~= '' then
      -- Steps inherit their workflow's priority and submit order, so an older workflow's next
      -- step is not overtaken by newer work.
      local wf = redis.call('HMGET', j.keys.workflow, 'priority', 'seq')
      if wf[1] then
        priority, order = tonumber(wf[1]), tonumber(wf[2])
      else
        redis.call('HSET', j.keys.workflow, 'priority', priority, 'seq', seq, 'customer_id',
          j.customer_id)
      end
      redis.call('EXPIRE', j.keys.workflow, retention)
    end
    local score = fmt_int((PRIORITY_MAX - priority) * SEQ_SPAN + order)
    redis.call('HSET', j.keys.job,
      'id', j.id, 'service', j.service, 'status', 'pending', 'priority', priority,
      'payload', j.payload, 'requirements', j.requirements, 'class_id', j.class_id,
      'customer_id', j.customer_id, 'workflow_id', j.workflow_id, 'step', j.step,
      'total_steps', j.total_steps, 'max_attempts', j.max_attempts, 'timeout_s', j.timeout_s,
      'traceparent', j.traceparent, 'loras', j.loras, 'attempts', 0, 'progress', 0, 'seq', seq,
      'score', score, 'created_at', now)
    index_pending(j.keys, j.id, score, j.customer_id, j.workflow_id, j.service, j.class_id,
      j.requirements)
    if j.customer_id ~= '' then redis.call('ZADD', j.keys.customer, seq, j.id) end
    emit(base, j.id, j.keys.events, maxlen, j.service, {type = 'submitted', status = 'pending', at = now})
    woken[j.service] = true
    ids[i] = j.id
  end
  for service in pairs(woken) do
    redis.call('PUBLISH', base .. ':wake:' .. service, 'submit')
  end
  return ids
end

-- KEYS: worker, leases, fence, delayed, then one classes registry per service in caps.services.
-- ARGV: base, capabilities JSON, lease_ms, events_maxlen, promote_limit.
-- Returns {'job', HGETALL of the claimed job} or {'none', ms until worth trying again or -1}.
local function emp_claim(keys, args)
  local base = args[1]
  local caps = load_caps(args[2])
  local lease_ms = int_arg(args[3], 'lease_ms', 1)
  local maxlen = int_arg(args[4], 'events_maxlen', 1)
  local promote_limit = int_arg(args[5], 'promote_limit', 0)
  if #keys ~= 4 + #caps.services then
    bad('INVALID', 'keys', 'expected one classes key per service after the first four')
  end
  local worker_key, leases, fence, delayed = keys[1], keys[2], keys[3], keys[4]
  local now = now_ms()
  promote_due(base, delayed, now, promote_limit, maxlen)

  local best_id, best_score, best_service, hint = nil, nil, nil, nil
  for s, service in ipairs(caps.services) do
    local registry = keys[4 + s]
    local matches = caps.matches
    for _, class_id in ipairs(redis.call('HKEYS', registry)) do
      local ok = matches[class_id]
      if ok == nil then
        local req = class_def(registry, class_id)
        ok = req ~= nil and class_matches(service, req, caps)
        matches[class_id] = ok
      end
      if ok then
        for _, zkey in ipairs(candidate_sets(base .. ':pending:' .. class_id, caps)) do
          local job_id, score, wait = eligible_head(base, zkey, caps, now)
          if wait and (hint == nil or wait < hint) then hint = wait end
          if job_id and better(score, job_id, best_score, best_id) then
            best_id, best_score, best_service = job_id, score, service
          end
        end
      end
    end
  end

  if best_id == nil then
    local next_due = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')[2]
    if next_due then
      local wait = math.max(0, tonumber(next_due) - now)
      if hint == nil or wait < hint then hint = wait end
    end
    return {'none', hint or -1}
  end

  local jk = base .. ':job:' .. best_id
  local f = redis.call('HMGET', jk, 'customer_id', 'workflow_id', 'class_id')
  unindex_pending(derived_keys(base, best_service, f[3]), best_id, f[1], f[2], best_service, f[3])
  local token = redis.call('INCR', fence)
  local attempt = redis.call('HINCRBY', jk, 'attempts', 1)
  local deadline = now + lease_ms
  redis.call('HSET', jk, 'status', 'claimed', 'worker_id', caps.worker_id, 'token', token,
    'claimed_at', now, 'lease_deadline', deadline)
  redis.call('ZADD', leases, deadline, best_id)
  if redis.call('EXISTS', worker_key) == 1 then
    redis.call('HSET', worker_key, 'state', 'busy', 'job_id', best_id, 'last_seen', now)
  end
  emit(base, best_id, base .. ':events:' .. best_id, maxlen, best_service,
    {type = 'claimed', status = 'claimed', at = now, attempt = attempt, worker_id = caps.worker_id})
  return {'job', redis.call('HGETALL', jk)}
end

-- Check that the caller holds the job's current claim; return the job's fields.
local function holder(job_key, job_id, token)
  local f = redis.call('HMGET', job_key, 'status', 'token', 'service', 'worker_id', 'attempts',
    'max_attempts')
  if not f[1] then bad('NOT_FOUND', 'job_id', 'job ' .. job_id .. ' does not exist') end
  if f[2] ~= token or (f[1] ~= 'claimed' and f[1] ~= 'running') then
    bad('STALE', 'token', 'job ' .. job_id .. ' is ' .. f[1] .. '; token ' .. token
      .. ' is not its current claim')
  end
  return {status = f[1], service = f[3], worker_id = f[4], attempts = tonumber(f[5]),
    max_attempts = tonumber(f[6])}
end

-- KEYS: job, leases. ARGV: base, job_id, token, lease_ms. Returns the new lease deadline (ms).
local function emp_heartbeat(keys, args)
  local job_id, token = args[2], args[3]
  local lease_ms = int_arg(args[4], 'lease_ms', 1)
  holder(keys[1], job_id, token)
  local deadline = now_ms() + lease_ms
  redis.call('HSET', keys[1], 'lease_deadline', deadline)
  redis.call('ZADD', keys[2], 'XX', deadline, job_id)
  return deadline
end

-- KEYS: job, events. ARGV: base, job_id, token, progress (0-100), message, events_maxlen.
local function emp_progress(keys, args)
  local base, job_id, token = args[1], args[2], args[3]
  local progress = num_arg(args[4], 'progress', 0, 100)
  local message = args[5] or ''
  local maxlen = int_arg(args[6], 'events_maxlen', 1)
  local job = holder(keys[1], job_id, token)
  local now = now_ms()
  local fields = {'progress', args[4], 'message', message}
  if job.status == 'claimed' then
    fields[#fields + 1] = 'status'
    fields[#fields + 1] = 'running'
    fields[#fields + 1] = 'started_at'
    fields[#fields + 1] = now
  end
  redis.call('HSET', keys[1], unpack(fields))
  emit(base, job_id, keys[2], maxlen, job.service, {type = 'progress', status = 'running', at = now,
    progress = progress, message = message, attempt = job.attempts, worker_id = job.worker_id})
  return 1
end

local function set_idle(worker_key, now)
  if redis.call('EXISTS', worker_key) == 1 then
    redis.call('HSET', worker_key, 'state', 'idle', 'job_id', '', 'last_seen', now)
  end
end

-- KEYS: job, events, leases, worker, finished; to claim the next job in the same call, also
-- fence, delayed and one classes registry per service (as emp_claim).
-- ARGV: base, job_id, token, result JSON, retention_s, maxlen; to claim the next job, also
-- capabilities JSON, lease_ms, promote_limit.
-- Returns 1, or with a next claim what emp_claim returns: one round trip per job instead of two.
local function emp_complete(keys, args)
  local claim_next = args[7] ~= nil
  local caps
  if claim_next then
    caps = load_caps(args[7])
    int_arg(args[8], 'lease_ms', 1)
    int_arg(args[9], 'promote_limit', 0)
    need_keys(keys, 7 + #caps.services)
  else
    need_keys(keys, 5)
  end
  local base, job_id, token, result = args[1], args[2], args[3], args[4]
  local retention = int_arg(args[5], 'retention_s', 1)
  local maxlen = int_arg(args[6], 'events_maxlen', 1)
  local ok = pcall(cjson.decode, result)
  if not ok then bad('INVALID', 'result', 'is not JSON') end
  local job = holder(keys[1], job_id, token)
  local now = now_ms()
  redis.call('HSET', keys[1], 'status', 'completed', 'result', result, 'progress', 100,
    'finished_at', now, 'token', '', 'lease_deadline', '')
  redis.call('ZREM', keys[3], job_id)
  set_idle(keys[4], now)
  to_archive(keys[5], job_id, now)
  emit(base, job_id, keys[2], maxlen, job.service, {type = 'completed', status = 'completed',
    at = now, attempt = job.attempts, worker_id = job.worker_id, progress = 100})
  redis.call('EXPIRE', keys[1], retention)
  redis.call('EXPIRE', keys[2], retention)
  if not claim_next then return 1 end
  local claim_keys = {keys[4], keys[3], keys[6], keys[7]}
  for i = 8, #keys do claim_keys[#claim_keys + 1] = keys[i] end
  return emp_claim(claim_keys, {base, args[7], args[8], args[6], args[9]})
end

-- KEYS: job, events, leases, worker, delayed, dead, finished.
-- ARGV: base, job_id, token, error, retryable (0/1), delay_ms, avoid_grace_ms, retention_s, maxlen,
-- and optionally the classification (ADR-009): category, pattern id, user message.
-- Returns 'retrying' or 'failed'.
local function emp_fail(keys, args)
  need_keys(keys, 7)
  local base, job_id, token, message = args[1], args[2], args[3], args[4]
  local retryable = int_arg(args[5], 'retryable', 0, 1)
  local delay = int_arg(args[6], 'delay_ms', 0)
  local grace = int_arg(args[7], 'avoid_grace_ms', 0)
  local retention = int_arg(args[8], 'retention_s', 1)
  local maxlen = int_arg(args[9], 'events_maxlen', 1)
  local job = holder(keys[1], job_id, token)
  local now = now_ms()
  -- Stored with this attempt's error, so an earlier attempt's classification never lingers.
  redis.call('HSET', keys[1], 'error_category', args[10] or '', 'error_pattern_id',
    args[11] or '', 'error_user_message', args[12] or '')
  redis.call('ZREM', keys[3], job_id)
  set_idle(keys[4], now)
  if retryable == 1 and job.attempts < job.max_attempts then
    local due = now + delay
    redis.call('HSET', keys[1], 'status', 'retrying', 'error', message, 'retry_at', due,
      'avoid_worker', job.worker_id, 'avoid_until', due + grace, 'token', '', 'lease_deadline', '')
    redis.call('ZADD', keys[5], due, job_id)
    emit(base, job_id, keys[2], maxlen, job.service, {type = 'retrying', status = 'retrying',
      at = now, attempt = job.attempts, worker_id = job.worker_id, error = message})
    return 'retrying'
  end
  redis.call('HSET', keys[1], 'status', 'failed', 'error', message, 'finished_at', now,
    'token', '', 'lease_deadline', '')
  redis.call('ZADD', keys[6], now, job_id)
  to_archive(keys[7], job_id, now)
  emit(base, job_id, keys[2], maxlen, job.service, {type = 'failed', status = 'failed', at = now,
    attempt = job.attempts, worker_id = job.worker_id, error = message})
  -- The dead-letter set keeps the job hash (no expiry) until an operator deals with it.
  redis.call('EXPIRE', keys[2], retention)
  return 'failed'
end

-- A worker hands back a job it will not finish (shutdown): pending again at once, and the
-- attempt does not count. KEYS: job, events, leases, worker. ARGV: base, job_id, token, reason,
-- maxlen.
local function emp_release(keys, args)
  local base, job_id, token, reason = args[1], args[2], args[3], args[4]
  local maxlen = int_arg(args[5], 'events_maxlen', 1)
  holder(keys[1], job_id, token)
  redis.call('ZREM', keys[3], job_id)
  set_idle(keys[4], now_ms())
  redis.call('HINCRBY', keys[1], 'attempts', -1)
  requeue(base, job_id, maxlen, reason ~= '' and reason or 'released')
  return 1
end

-- KEYS: job, events, leases, delayed, finished. ARGV: base, job_id, reason, retention_s, maxlen.
-- Returns the status the job had. A running job's worker is told on its control channel.
local function emp_cancel(keys, args)
  need_keys(keys, 5)
  local base, job_id, reason = args[1], args[2], args[3]
  local retention = int_arg(args[4], 'retention_s', 1)
  local maxlen = int_arg(args[5], 'events_maxlen', 1)
  local f = redis.call('HMGET', keys[1], 'status', 'service', 'class_id', 'customer_id',
    'workflow_id', 'worker_id')
  local status, service = f[1], f[2]
  if not status then bad('NOT_FOUND', 'job_id', 'job ' .. job_id .. ' does not exist') end
  if status == 'completed' or status == 'failed' or status == 'cancelled' then
    bad('CONFLICT', 'status', 'job ' .. job_id .. ' is already ' .. status)
  end
  local now = now_ms()
  if status == 'pending' then
    unindex_pending(derived_keys(base, service, f[3]), job_id, f[4], f[5], service, f[3])
  elseif status == 'retrying' then
    redis.call('ZREM', keys[4], job_id)
  else
    redis.call('ZREM', keys[3], job_id)
    set_idle(base .. ':worker:' .. f[6], now)
    redis.call('PUBLISH', base .. ':control:' .. f[6],
      cjson.encode({type = 'cancel', job_id = job_id, reason = reason}))
  end
  redis.call('HSET', keys[1], 'status', 'cancelled', 'finished_at', now, 'token', '',
    'lease_deadline', '', 'error', reason)
  to_archive(keys[5], job_id, now)
  emit(base, job_id, keys[2], maxlen, service, {type = 'cancelled', status = 'cancelled', at = now,
    reason = reason, worker_id = f[6]})
  redis.call('EXPIRE', keys[1], retention)
  redis.call('EXPIRE', keys[2], retention)
  return status
end

-- Return the jobs of workers whose lease ran out, and promote due retries. Idempotent and safe to
-- run from many processes: each expired lease is removed from the set by exactly one call.
-- Also trims archive-outbox entries older than the retention, so the outbox stays bounded where
-- no projector runs (a queue used without the API).
-- KEYS: leases, delayed, dead, finished. ARGV: base, limit, retention_s, maxlen.
-- Returns {requeued, failed, promoted}.
local function emp_reap(keys, args)
  need_keys(keys, 4)
  local base = args[1]
  local limit = int_arg(args[2], 'limit', 1)
  local retention = int_arg(args[3], 'retention_s', 1)
  local maxlen = int_arg(args[4], 'events_maxlen', 1)
  local leases, delayed, dead, finished = keys[1], keys[2], keys[3], keys[4]
  local now = now_ms()
  redis.call('ZREMRANGEBYSCORE', finished, '-inf', now - retention * 1000)
  local requeued, failed = 0, 0
  for _, job_id in ipairs(redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, limit)) do
    redis.call('ZREM', leases, job_id)
    local jk = base .. ':job:' .. job_id
    local f = redis.call('HMGET', jk, 'status', 'attempts', 'max_attempts', 'worker_id', 'service')
    if f[1] == 'claimed' or f[1] == 'running' then
      set_idle(base .. ':worker:' .. f[4], now)
      if tonumber(f[2]) < tonumber(f[3]) then
        requeue(base, job_id, maxlen, 'lease_expired')
        requeued = requeued + 1
      else
        local message = 'worker ' .. f[4] .. ' stopped renewing its lease on the last attempt ('
          .. f[2] .. ' of ' .. f[3] .. ')'
        redis.call('HSET', jk, 'status', 'failed', 'error', message, 'finished_at', now,
          'token', '', 'lease_deadline', '')
        redis.call('ZADD', dead, now, job_id)
        to_archive(finished, job_id, now)
        emit(base, job_id, base .. ':events:' .. job_id, maxlen, f[5], {type = 'failed',
          status = 'failed', at = now, attempt = f[2], worker_id = f[4], error = message})
        redis.call('EXPIRE', base .. ':events:' .. job_id, retention)
        failed = failed + 1
      end
    end
  end
  local promoted = promote_due(base, delayed, now, limit, maxlen)
  return {requeued, failed, promoted}
end

redis.register_function('emp_version', function() return VERSION end)
redis.register_function('emp_submit', emp_submit)
redis.register_function('emp_claim', emp_claim)
redis.register_function('emp_heartbeat', emp_heartbeat)
redis.register_function('emp_progress', emp_progress)
redis.register_function('emp_complete', emp_complete)
redis.register_function('emp_fail', emp_fail)
redis.register_function('emp_release', emp_release)
redis.register_function('emp_cancel', emp_cancel)
redis.register_function('emp_reap', emp_reap)
