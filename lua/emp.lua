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

local VERSION = '15'

-- Score layout: (PRIORITY_MAX - priority) * 2^42 + submit order; see emp_core.jobs.job.pending_score.
local PRIORITY_MAX = 1000
local SEQ_SPAN = 2 ^ 42
-- How many heads of one pending set a claim inspects before it switches to the binary search that
-- skips a long run of denied customers (see first_allowed_rank).
local SCAN_LIMIT = 8
local EVENT_FIELDS = {'type', 'status', 'at', 'service', 'attempt', 'worker_id', 'progress', 'message',
  'error', 'reason', 'preview', 'machine_id', 'category', 'retry_at'}

-- Caches local to this library load. Requirement classes are immutable (the id is a hash of the
-- requirements), so a decoded class, and whether a given capability set matches it, never go stale.
local caps_cache, caps_count = {}, 0
local class_cache, class_count = {}, 0
-- Requirement texts a submit has checked, by class id (the text with its service, as checked).
local class_texts, class_text_count = {}, 0
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

-- Per-minute counters for the studio's charts (emp_core.queue.stats reads them): a hash per
-- minute of the event (Keys.minute_stats), fields '<metric>:<service>'. Counted here, where every
-- state change passes, at one HINCRBY per counted event (a first claim: two), plus an EXPIRE when
-- the count is the minute's first of its kind, instead of a round trip more per job on the Python
-- side. `created` is the job's created_at when the caller has read it already (a claim has).
local STATS_TTL_S = 25 * 3600
local COUNTED = {submitted = 'submitted', completed = 'completed', failed = 'failed',
  retrying = 'retried', cancelled = 'cancelled'}
local function tally(base, job_id, service, event, created)
  local metric = COUNTED[event.type]
  local first_claim = event.type == 'claimed' and tonumber(event.attempt) == 1
  if metric == nil and not first_claim then return end
  local at = tonumber(event.at) or now_ms()
  local key = base .. ':stats:' .. math.floor(at / 60000)
  -- A count of 1 means this field, and possibly the key, was just created: the key gets its TTL
  -- then (a key is created by such a first count), not on every event.
  local fresh = false
  if metric then fresh = redis.call('HINCRBY', key, metric .. ':' .. service, 1) == 1 end
  if first_claim then
    -- Time in line: submit to first claim (a retry's wait is its backoff, not the queue's).
    created = tonumber(created or redis.call('HGET', base .. ':job:' .. job_id, 'created_at'))
    if created then
      redis.call('HINCRBY', key, 'wait_ms:' .. service, math.max(0, at - created))
      fresh = redis.call('HINCRBY', key, 'waited:' .. service, 1) == 1 or fresh
    end
  end
  if fresh then redis.call('EXPIRE', key, STATS_TTL_S) end
end

-- Append an event to the job's capped stream and publish it on the queue's events channel.
-- Every channel is published with SPUBLISH: it carries the queue's hash tag, so in a cluster the
-- message stays on the queue's shard instead of crossing the bus to every node (PUBLISH).
local function emit(base, job_id, events_key, maxlen, service, event, created)
  -- The service goes into the stream too: a replayed event (a socket that connects after the
  -- job was submitted and claimed) says what it is for, as a published one does.
  event.service = service
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
  redis.call('SPUBLISH', base .. ':events', cjson.encode(event))
  tally(base, job_id, service, event, created)
  return event_id
end

---------------------------------------------------------------------------------------------------
-- validation: the rules of emp_core.jobs (requirements.py, capabilities.py), enforced again here
-- because any client can call FCALL. Every function runs these before its first write.

local function is_seq(t)
  -- A JSON array as cjson decodes it: keys 1..n and nothing else (an empty table is either).
  local n = 0
  for k in pairs(t) do
    if type(k) ~= 'number' then return false end
    n = n + 1
  end
  for i = 1, n do
    if t[i] == nil then return false end
  end
  return true
end

local function is_object_text(text)
  return type(text) == 'string' and string.match(text, '^%s*{') ~= nil
end

local function is_ident(v)
  -- emp_core.jobs.capabilities.Identifier: ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$
  return type(v) == 'string' and #v >= 1 and #v <= 128 and string.match(v, '^[%w][%w_.:%-]*$') ~= nil
end

local function is_service(v)
  -- emp_core.jobs.capabilities.Service: ^[a-z0-9][a-z0-9_-]{0,63}$
  return type(v) == 'string' and #v >= 1 and #v <= 64 and string.match(v, '^[a-z0-9][a-z0-9_%-]*$') ~= nil
end

local function is_path(v)
  -- A dotted path of letters, digits, _ and - (requirements._PATH).
  if type(v) ~= 'string' or v == '' or string.sub(v, 1, 1) == '.' or string.sub(v, -1) == '.'
      or string.find(v, '..', 1, true) then
    return false
  end
  return string.match(v, '^[%w_%-%.]+$') ~= nil
end

local function finite_number(v)
  return type(v) == 'number' and v == v and v ~= math.huge and v ~= -math.huge
end

local function need_ident(v, field)
  if not is_ident(v) then
    bad('INVALID', field, 'must be 1-128 letters, digits, _ . : - (starting with a letter or '
      .. 'digit), got ' .. tostring(v))
  end
  return v
end

local function need_base(base)
  -- "prefix:{queue}": the braces are the hash tag every key of the queue shares.
  if type(base) ~= 'string' or not string.match(base, '^[%w_.%-]+:{[%w_.%-]+}$') then
    bad('INVALID', 'base', 'must be prefix:{queue}, got ' .. tostring(base))
  end
  return base
end

-- Each key the caller passed must be the one the arguments name: a key from another queue, job or
-- class would make the function write where its arguments say it does not.
local function need_key(actual, expected, field)
  if actual ~= expected then
    bad('INVALID', 'keys', field .. ' key must be ' .. expected .. ', got ' .. tostring(actual))
  end
end

local function check_tree(tree, where)
  -- requirements._check_capability_tree: dotted-path keys, no nulls, lists of scalars only.
  if type(tree) ~= 'table' or (next(tree) ~= nil and is_seq(tree)) then
    bad('INVALID', where, 'must be an object')
  end
  local count = 0
  for key, item in pairs(tree) do
    count = count + 1
    if not is_path(key) then
      bad('INVALID', where, tostring(key) .. ' is not a dotted path of letters, digits, _ and -')
    end
    if item == cjson.null then bad('INVALID', where, key .. ': null cannot be required') end
    if type(item) == 'table' then
      if next(item) ~= nil and is_seq(item) then
        for _, x in ipairs(item) do
          if type(x) == 'table' or x == cjson.null then
            bad('INVALID', where, key .. ': a list may hold only strings, numbers and booleans')
          end
        end
      elseif next(item) ~= nil then
        check_tree(item, where .. '.' .. key)
      end
    elseif type(item) == 'number' and not finite_number(item) then
      bad('INVALID', where, key .. ': numbers must be finite')
    end
  end
  return count
end

local function check_names(list, field, max_items)
  if type(list) ~= 'table' or not is_seq(list) then bad('INVALID', field, 'must be a list') end
  if #list > max_items then bad('INVALID', field, 'may hold at most ' .. max_items .. ' items') end
  for i, name in ipairs(list) do
    if type(name) ~= 'string' or #name < 1 or #name > 200 then
      bad('INVALID', field .. '.' .. (i - 1), 'must be a string of 1 to 200 characters')
    end
  end
end

local REQUIREMENT_FIELDS = {gpu_memory_gb = true, cpu_cores = true, ram_gb = true, models = true,
  customer_isolation = true, capabilities = true, exclude = true}

-- Decode and check a requirements JSON text (the canonical form: no nulls). Returns the table.
local function check_requirements(text)
  if not is_object_text(text) then bad('INVALID', 'requirements', 'is not a JSON object') end
  local ok, req = pcall(cjson.decode, text)
  if not ok or type(req) ~= 'table' then bad('INVALID', 'requirements', 'is not a JSON object') end
  for key, value in pairs(req) do
    if not REQUIREMENT_FIELDS[key] then
      bad('INVALID', 'requirements.' .. tostring(key), 'is not a requirement')
    end
    if value == cjson.null then
      bad('INVALID', 'requirements.' .. key, 'may not be null; leave it out')
    end
  end
  for _, name in ipairs({'gpu_memory_gb', 'ram_gb'}) do
    local v = req[name]
    if v ~= nil and (not finite_number(v) or v < 0) then
      bad('INVALID', 'requirements.' .. name, 'must be a finite number of at least 0')
    end
  end
  local cores = req.cpu_cores
  if cores ~= nil and (not finite_number(cores) or cores < 0 or cores ~= math.floor(cores)) then
    bad('INVALID', 'requirements.cpu_cores', 'must be an integer of at least 0')
  end
  if req.models ~= nil then check_names(req.models, 'requirements.models', 100) end
  if req.customer_isolation ~= nil and req.customer_isolation ~= 'strict' then
    bad('INVALID', 'requirements.customer_isolation', "must be 'strict'")
  end
  if req.capabilities ~= nil
      and check_tree(req.capabilities, 'requirements.capabilities') > 100 then
    bad('INVALID', 'requirements.capabilities', 'may hold at most 100 entries')
  end
  local ex = req.exclude
  if ex ~= nil then
    if type(ex) ~= 'table' or (next(ex) ~= nil and is_seq(ex)) then
      bad('INVALID', 'requirements.exclude', 'must be an object')
    end
    for key, value in pairs(ex) do
      if key ~= 'models' and key ~= 'capabilities' then
        bad('INVALID', 'requirements.exclude.' .. tostring(key), 'is not a requirement')
      end
      if value == cjson.null then
        bad('INVALID', 'requirements.exclude.' .. key, 'may not be null; leave it out')
      end
    end
    if ex.models ~= nil then check_names(ex.models, 'requirements.exclude.models', 100) end
    if ex.capabilities ~= nil
        and check_tree(ex.capabilities, 'requirements.exclude.capabilities') > 100 then
      bad('INVALID', 'requirements.exclude.capabilities', 'may hold at most 100 entries')
    end
  end
  return req
end

-- A requirement class is named by its content: the first 16 hex digits of
-- sha1(service "\n" requirements JSON) (emp_core.jobs.requirements.class_id).
local function class_id_of(service, requirements)
  return string.sub(redis.sha1hex(service .. '\n' .. requirements), 1, 16)
end

local CAPS_FIELDS = {worker_id = true, machine_id = true, services = true, hardware = true,
  models = true, customer_isolation = true, allowed_customers = true, denied_customers = true,
  workflow_id = true, capabilities = true}
local ISOLATION = {none = true, loose = true, strict = true}

local function check_idents(list, field, max_items)
  if type(list) ~= 'table' or not is_seq(list) then bad('INVALID', field, 'must be a list') end
  if #list > max_items then bad('INVALID', field, 'may hold at most ' .. max_items .. ' items') end
  for i, v in ipairs(list) do need_ident(v, field .. '.' .. (i - 1)) end
end

-- emp_core.jobs.capabilities.WorkerCapabilities, checked field by field. Raises on the first bad one.
local function check_caps(caps)
  for key in pairs(caps) do
    if not CAPS_FIELDS[key] then
      bad('INVALID', 'capabilities', tostring(key) .. ' is not a worker capability field')
    end
  end
  need_ident(caps.worker_id, 'capabilities.worker_id')
  local services = caps.services
  if type(services) ~= 'table' or not is_seq(services) or #services < 1 or #services > 32 then
    bad('INVALID', 'capabilities.services', 'must be a list of 1 to 32 services')
  end
  local seen = {}
  for i, s in ipairs(services) do
    if not is_service(s) then
      bad('INVALID', 'capabilities.services.' .. (i - 1), 'is not a service name')
    end
    if seen[s] then bad('INVALID', 'capabilities.services', 'each service may be listed once') end
    seen[s] = true
  end
  for _, name in ipairs({'machine_id', 'workflow_id'}) do
    if caps[name] ~= nil and caps[name] ~= cjson.null then
      need_ident(caps[name], 'capabilities.' .. name)
    end
  end
  local hw = caps.hardware
  if hw ~= nil then
    if type(hw) ~= 'table' or (next(hw) ~= nil and is_seq(hw)) then
      bad('INVALID', 'capabilities.hardware', 'must be an object')
    end
    for key, v in pairs(hw) do
      if key ~= 'gpu_memory_gb' and key ~= 'cpu_cores' and key ~= 'ram_gb' then
        bad('INVALID', 'capabilities.hardware.' .. tostring(key), 'is not a hardware field')
      end
      if not finite_number(v) or v < 0 or (key == 'cpu_cores' and v ~= math.floor(v)) then
        bad('INVALID', 'capabilities.hardware.' .. key, 'must be a finite number of at least 0')
      end
    end
  end
  local models = caps.models
  if models ~= nil then
    if type(models) ~= 'table' or (next(models) ~= nil and is_seq(models)) then
      bad('INVALID', 'capabilities.models', 'must be an object of service -> model names')
    end
    for service, list in pairs(models) do
      if not is_service(service) then
        bad('INVALID', 'capabilities.models', tostring(service) .. ' is not a service name')
      end
      if type(list) ~= 'table' or not is_seq(list) then
        bad('INVALID', 'capabilities.models.' .. service, 'must be a list')
      end
      for _, m in ipairs(list) do
        if type(m) ~= 'string' then
          bad('INVALID', 'capabilities.models.' .. service, 'must hold strings')
        end
      end
    end
  end
  if caps.customer_isolation ~= nil and not ISOLATION[caps.customer_isolation] then
    bad('INVALID', 'capabilities.customer_isolation', 'must be none, loose or strict')
  end
  if caps.allowed_customers ~= nil and caps.allowed_customers ~= cjson.null then
    check_idents(caps.allowed_customers, 'capabilities.allowed_customers', 1000)
  end
  if caps.denied_customers ~= nil then
    check_idents(caps.denied_customers, 'capabilities.denied_customers', 1000)
  end
  local tree = caps.capabilities
  if tree ~= nil and (type(tree) ~= 'table' or (next(tree) ~= nil and is_seq(tree))) then
    bad('INVALID', 'capabilities.capabilities', 'must be an object')
  end
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

-- Canonical JSON (sorted keys): equal capability profiles encode to equal text.
local canon
canon = function(v)
  if type(v) == 'table' then
    if next(v) == nil then return '{}' end
    local parts = {}
    if is_seq(v) then
      for i, x in ipairs(v) do parts[i] = canon(x) end
      return '[' .. table.concat(parts, ',') .. ']'
    end
    local ks = {}
    for key in pairs(v) do ks[#ks + 1] = tostring(key) end
    table.sort(ks)
    for i, key in ipairs(ks) do parts[i] = cjson.encode(key) .. ':' .. canon(v[key]) end
    return '{' .. table.concat(parts, ',') .. '}'
  end
  return cjson.encode(v)
end

-- Decoded capabilities by content hash, with the customer lists turned into sets and nulls into nil.
local function load_caps(text)
  local digest = redis.sha1hex(text)
  local caps = caps_cache[digest]
  if caps then return caps end
  if not is_object_text(text) then bad('INVALID', 'capabilities', 'is not a JSON object') end
  caps = decode_json(text, 'capabilities')
  check_caps(caps)
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
  caps.profiles = {}
  for _, service in ipairs(caps.services) do
    local text = canon({hardware = caps.hardware, models = caps.models[service] or {},
      customer_isolation = caps.customer_isolation or 'none', capabilities = caps.capabilities})
    caps.profiles[service] = {id = string.sub(redis.sha1hex(service .. '\n' .. text), 1, 16),
      text = text}
  end
  if caps_count >= CACHE_MAX then caps_cache, caps_count = {}, 0 end
  caps_cache[digest] = caps
  caps_count = caps_count + 1
  return caps
end

---------------------------------------------------------------------------------------------------
-- the pending index

-- A score's priority band: 0 for priority PRIORITY_MAX, counting up as priority falls.
local function band_of(score)
  return math.floor(tonumber(score) / SEQ_SPAN)
end

-- pending:{class}:customers:{priority}: the customers with pending jobs of the class at that
-- priority, scored by (a lower bound of) their fair-share start tag; see "fair shares" below.
local function fair_index_key(pending, score)
  return pending .. ':customers:' .. fmt_int(PRIORITY_MAX - band_of(score))
end

---------------------------------------------------------------------------------------------------
-- capability profiles: the claim's index, and whom a new job wakes
--
-- A profile is what matching reads of a worker for one service (hardware, that service's models,
-- isolation, custom capabilities), canonically encoded; its id is a hash of that text. Workers
-- with equal profiles share one. For each profile the library keeps
--   ready:{service}:{profile}  sorted set: the classes this profile can run that have pending jobs,
--                              scored by (a lower bound of) their head job's score;
--   idle:{service}:{profile}   sorted set: idle worker slots "worker#slot" by when they went idle.
-- A class is matched against a profile once: when the class appears (first pending job) against
-- every live profile, or when a profile first claims against every class. That first pass is
-- spread over the profile's claims, BUILD_STEP classes each (see build_step), so a new kind of
-- worker joining a queue with 100,000 classes does not block Redis for seconds in one claim.
-- A claim then reads the first few entries of its ready set, never the class registry, so its
-- cost does not grow with the number of classes it cannot run. Scores in a ready set are lower
-- bounds: raised lazily by the claim that finds a class's head moved on, lowered at once
-- (ZADD LT) when a better job arrives, so a claim never overlooks a better class.

local PROFILE_TTL_MS = 3600 * 1000  -- a profile no worker has claimed with for this long retires
local CLASS_WINDOW = 32             -- classes of a ready set one claim looks at, at most
local WAKE_TRIES = 4                -- idle slots one pending job may try before giving up
local BUILD_STEP = 64               -- registry classes one claim matches during a profile's first pass
-- While a profile's first pass runs, its ready set holds this member followed by the pass's HSCAN
-- cursor, at score 0 (below every job's score), so the claim learns of the pass from the ZRANGE it
-- does anyway. Class ids are hex digits: the two never meet.
local BUILD_MARK = '~pass:'
local profile_cache, profile_count = {}, 0
local match_cache, match_count = {}, 0

-- A profile's text decoded into the shape class_matches reads (as decoded capabilities).
local function profile_caps(service, text)
  local p = cjson.decode(text)
  local hw = p.hardware or {}
  return {hardware = {gpu_memory_gb = tonumber(hw.gpu_memory_gb) or 0,
      cpu_cores = tonumber(hw.cpu_cores) or 0, ram_gb = tonumber(hw.ram_gb) or 0},
    models = {[service] = p.models or {}}, customer_isolation = p.customer_isolation,
    capabilities = p.capabilities or {}}
end

local function profile_of(base, service, pid)
  local ck = service .. '/' .. pid
  local prof = profile_cache[ck]
  if prof ~= nil then return prof end
  local text = redis.call('HGET', base .. ':profiles:' .. service, pid)
  if not text then return nil end
  local ok, decoded = pcall(profile_caps, service, text)
  if not ok then return nil end
  if profile_count >= CACHE_MAX then profile_cache, profile_count = {}, 0 end
  profile_cache[ck] = decoded
  profile_count = profile_count + 1
  return decoded
end

local function decoded_class(class_id, text)
  local req = class_cache[class_id]
  if req then return req end
  local ok, checked = pcall(check_requirements, text)
  if not ok then return nil end
  if class_count >= CACHE_MAX then class_cache, class_count = {}, 0 end
  class_cache[class_id] = checked
  class_count = class_count + 1
  return checked
end

-- Whether profile `pid` can run class `class_id` (decided once per library load and pair).
local function profile_matches(base, service, pid, class_id, req_text)
  local mk = pid .. '/' .. class_id
  local ok = match_cache[mk]
  if ok ~= nil then return ok end
  local prof = profile_of(base, service, pid)
  local req = decoded_class(class_id, req_text)
  ok = prof ~= nil and req ~= nil and class_matches(service, req, prof)
  if match_count >= CACHE_MAX * 8 then match_cache, match_count = {}, 0 end
  match_cache[mk] = ok
  match_count = match_count + 1
  return ok
end

local function ready_key(base, service, pid) return base .. ':ready:' .. service .. ':' .. pid end
local function idle_key(base, service, pid) return base .. ':idle:' .. service .. ':' .. pid end

-- The live profiles of a service (retiring, a few at a time, those unused for PROFILE_TTL_MS).
local function live_profiles(base, service, now)
  local seen = base .. ':profiles_seen:' .. service
  -- One read: the set is ordered by last use, so the stale come first (a service has a handful
  -- of profiles, one per worker shape).
  local entries = redis.call('ZRANGE', seen, 0, -1, 'WITHSCORES')
  local live, retired = {}, 0
  for i = 1, #entries, 2 do
    local pid = entries[i]
    if retired < 8 and tonumber(entries[i + 1]) <= now - PROFILE_TTL_MS then
      retired = retired + 1
      redis.call('ZREM', seen, pid)
      redis.call('HDEL', base .. ':profiles:' .. service, pid)
      redis.call('DEL', ready_key(base, service, pid), idle_key(base, service, pid))
    else
      live[#live + 1] = pid
    end
  end
  return live
end

-- One job became pending: wake one idle slot of a profile able to run it, if there is one. A
-- slot is popped from its idle set and told on its worker's control channel; SPUBLISH answers how
-- many received it, so a slot whose process died is skipped for the next.
local function wake_one(base, service, class_id, req_text, profiles)
  for _, pid in ipairs(profiles) do
    if profile_matches(base, service, pid, class_id, req_text) then
      local idle = idle_key(base, service, pid)
      for _ = 1, WAKE_TRIES do
        local popped = redis.call('ZPOPMAX', idle)
        if popped[1] == nil then break end
        local worker, slot = string.match(popped[1], '^(.+)#(%d+)$')
        if worker and redis.call('SPUBLISH', base .. ':control:' .. worker,
            '{"type":"wake","slot":' .. slot .. '}') > 0 then
          return true
        end
      end
    end
  end
  return false
end

-- Put a job into the pending sets of its class (and of its customer and workflow); keep the
-- ready sets of the service's profiles right, and wake one idle slot able to run it.
-- `live`: a table the caller keeps for one call, caching each service's live profiles (a bulk
-- submit reads them once per service, not once per job).
local function index_pending(k, job_id, score, customer, workflow, service, class_id, reqs, now,
    live)
  local head = redis.call('ZRANGE', k.pending, 0, 0, 'WITHSCORES')
  redis.call('ZADD', k.pending, score, job_id)
  -- Ownerless jobs (customer '') get a sub-set too: fair shares treat them as one customer.
  redis.call('ZADD', k.pending .. ':cust:' .. customer, score, job_id)
  -- Listed at 0, below any start tag: the next claim that reads it raises it to the truth.
  redis.call('ZADD', fair_index_key(k.pending, score), 'NX', 0, customer)
  if workflow ~= '' then redis.call('ZADD', k.pending .. ':wf:' .. workflow, score, job_id) end
  redis.call('HINCRBY', k.count, service, 1)
  local base = k.base
  local profiles = live and live[service]
  if not profiles then
    profiles = live_profiles(base, service, now or now_ms())
    if live then live[service] = profiles end
  end
  if head[1] == nil then
    -- The class appears: register it, and match it once against every live profile.
    redis.call('HSET', k.registry, class_id, reqs)
    for _, pid in ipairs(profiles) do
      if profile_matches(base, service, pid, class_id, reqs) then
        redis.call('ZADD', ready_key(base, service, pid), score, class_id)
      end
    end
  elseif tonumber(score) < tonumber(head[2]) then
    -- A better head: lower the class's score where it is listed (XX: only the matching ones).
    for _, pid in ipairs(profiles) do
      redis.call('ZADD', ready_key(base, service, pid), 'XX', 'LT', score, class_id)
    end
  end
  wake_one(base, service, class_id, reqs, profiles)
end

local function unindex_pending(k, job_id, score, customer, workflow, service, class_id)
  if redis.call('ZREM', k.pending, job_id) == 0 then return false end
  customer = customer or ''
  local own = k.pending .. ':cust:' .. customer
  redis.call('ZREM', own, job_id)
  -- The customer leaves the class's fair index at this priority with its last job there.
  if tonumber(score) then
    local lo = band_of(score) * SEQ_SPAN
    if redis.call('ZCOUNT', own, fmt_int(lo), '(' .. fmt_int(lo + SEQ_SPAN)) == 0 then
      redis.call('ZREM', fair_index_key(k.pending, score), customer)
    end
  end
  if workflow ~= '' then redis.call('ZREM', k.pending .. ':wf:' .. workflow, job_id) end
  if redis.call('EXISTS', k.pending) == 0 then redis.call('HDEL', k.registry, class_id) end
  redis.call('HINCRBY', k.count, service, -1)
  return true
end

local function derived_keys(base, service, class_id)
  return {
    base = base,
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
end

-- Set aside a stored class or job that cannot be used (written by hand, by a bug, by an older
-- deploy), with the reason, so one bad record never makes every claim fail. `what` is 'class' or
-- 'job'; an operator reads the `quarantine` hash.
local function quarantine(base, what, id, reason, now)
  redis.call('HSET', base .. ':quarantine', what .. ':' .. id,
    cjson.encode({reason = reason, at = now}))
end

-- The fields a claimed job must have for a worker to build it (emp_core.jobs.job.Job.from_redis).
-- The last three are what the claim then writes from, kept per job in `claim_reads` for the call.
local CLAIM_FIELDS = {'status', 'customer_id', 'avoid_worker', 'avoid_until', 'id', 'service',
  'class_id', 'priority', 'max_attempts', 'timeout_s', 'payload', 'workflow_id', 'created_at',
  'attempts', 'step'}
local claim_reads = {}

-- Why a pending set's member cannot be claimed, or nil when it can. `f` is HMGET CLAIM_FIELDS.
local function unclaimable(job_id, f)
  if not f[1] then return 'the job record is missing' end
  if f[1] ~= 'pending' then return 'indexed as pending but its status is ' .. f[1] end
  if f[5] ~= job_id or not f[6] or not f[7] then return 'id, service or class_id is wrong' end
  if not tonumber(f[8]) or not tonumber(f[9]) or not tonumber(f[10]) then
    return 'priority, max_attempts or timeout_s is not a number'
  end
  if not f[11] then return 'the payload is missing' end
  return nil
end

-- Move retries whose backoff is over back to pending; bounded per call. A delayed entry whose job
-- is not retrying is quarantined rather than indexed.
local function promote_due(base, delayed, now, limit, maxlen)
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, limit)
  for _, job_id in ipairs(due) do
    redis.call('ZREM', delayed, job_id)
    local f = redis.call('HMGET', base .. ':job:' .. job_id, 'status', 'service', 'class_id',
      'score', 'requirements')
    if f[1] == 'retrying' and f[2] and f[3] and tonumber(f[4]) and f[5] then
      requeue(base, job_id, maxlen, 'retry_due')
    else
      quarantine(base, 'job', job_id, 'delayed but its record is '
        .. (f[1] and ('in status ' .. f[1] .. ' or incomplete') or 'missing'), now)
    end
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

-- A job's workflow step from what this claim read of it (math.huge without one).
local function step_of(job_id)
  local m = claim_reads[job_id]
  return (m and tonumber(m[15])) or math.huge
end

-- Equal scores occur only within one workflow (its steps share its priority and age): of the
-- eligible jobs tied with `job_id` at `score`, the lowest step goes first, so steps pending
-- together run in step order. Reads at most TIE_MAX tied jobs (a workflow with more steps
-- pending at once is ordered among those).
local TIE_MAX = 32
local function lowest_step(base, zkey, caps, now, job_id, score)
  local tied = redis.call('ZRANGE', zkey, score, score, 'BYSCORE', 'LIMIT', 0, TIE_MAX)
  local pick, pick_step = job_id, step_of(job_id)
  for _, other in ipairs(tied) do
    if other ~= pick then
      local m = claim_reads[other]
      if m == nil then
        m = redis.call('HMGET', base .. ':job:' .. other, unpack(CLAIM_FIELDS))
        claim_reads[other] = m
      end
      local step = tonumber(m[15]) or math.huge
      local held = m[3] == caps.worker_id and tonumber(m[4]) and tonumber(m[4]) > now
      if not unclaimable(other, m) and not held
          and (step < pick_step or (step == pick_step and other < pick)) then
        pick, pick_step = other, step
      end
    end
  end
  return pick
end

-- The best job of one pending set this worker may take: returns id, score, a wait hint (ms)
-- when a job is held back for another worker, and the job's customer.
local function eligible_head(base, zkey, caps, now, class_key, service, depth)
  local heads = redis.call('ZRANGE', zkey, 0, SCAN_LIMIT - 1, 'WITHSCORES')
  local hint = nil
  local all_denied = true
  local quarantined = 0
  for i = 1, #heads, 2 do
    local job_id = heads[i]
    local m = redis.call('HMGET', base .. ':job:' .. job_id, unpack(CLAIM_FIELDS))
    claim_reads[job_id] = m
    local why = unclaimable(job_id, m)
    if why then
      -- Out of the index and into quarantine: the next head is looked at instead.
      redis.call('ZREM', zkey, job_id)
      if redis.call('ZREM', class_key, job_id) == 1 then
        redis.call('HINCRBY', base .. ':pending_count', service, -1)
      end
      quarantine(base, 'job', job_id, why, now)
      quarantined = quarantined + 1
    end
    local customer, avoid, avoid_until = m[2] or '', m[3], tonumber(m[4])
    if why then
      -- skipped above
    elseif caps.allowed and not caps.allowed[customer] then
      -- Only a workflow's set gets here (an allow-list worker otherwise reads the sets of its
      -- allowed customers), and a workflow has one customer: nothing in this set is admitted.
      return nil, nil, hint
    elseif not (customer ~= '' and caps.denied[customer]) then
      all_denied = false
      if avoid == caps.worker_id and avoid_until and avoid_until > now then
        -- This worker failed the job last time: leave it to another worker for a grace period.
        local wait = avoid_until - now
        if hint == nil or wait < hint then hint = wait end
      else
        local workflow = m[12]
        if heads[i + 3] == heads[i + 1] and workflow and workflow ~= '' then
          -- Tied with the next head: steps of one workflow, taken in step order.
          job_id = lowest_step(base, zkey, caps, now, job_id, heads[i + 1])
        end
        return job_id, heads[i + 1], hint, customer
      end
    end
  end
  if quarantined > 0 and quarantined * 2 == #heads and #heads == 2 * SCAN_LIMIT
      and (depth or 0) < 4 then
    -- A whole page of bad records: look again past them (each pass removes what it quarantines;
    -- a few pages per claim, so the next claims carry on with the rest).
    return eligible_head(base, zkey, caps, now, class_key, service, (depth or 0) + 1)
  end
  if not all_denied or quarantined > 0 or #heads < 2 * SCAN_LIMIT then return nil, nil, hint end
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
  return entry[1], entry[2], hint, m[3] or ''
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
  if a ~= b then return a < b end
  -- A tie is one workflow's steps (in two classes): the lower step first.
  local sa, sb = step_of(job_id), step_of(best_id)
  if sa ~= sb then return sa < sb end
  return job_id < best_id
end

---------------------------------------------------------------------------------------------------
-- claim: LoRA affinity (ADR-010)
--
-- After the claim has found its best job (priority, then age), it looks again at the first
-- `scan` jobs of that priority in the sets that had an eligible head, and prefers the one whose
-- LoRAs this worker already holds: +10 per user LoRA, +5 per shared one, then age. The work is
-- at most `scan` jobs (an HMGET, an SMISMEMBER and, for a job it holds none of, a look at up to
-- HOLDER_SAMPLE holders per LoRA), whatever the number of pending jobs or of distinct LoRAs:
-- LoRAs live in the job hash, never in the requirement class.
-- - grace: a job with a LoRA this worker lacks but an idle worker holds is left to that worker
--   (woken here on its control channel, it claims within milliseconds) for at most this long. A job whose
--   LoRAs no idle worker holds is taken at once.
-- - patience: a job that has waited that long is taken before any affine one (0: never), so
--   a job nobody holds the LoRAs of is not passed over for long.
-- - window: a job with a LoRA this worker lacks but a busy worker holds is left to that
--   worker until it has waited this long (0: off, the default: affinity never waits for a busy
--   worker).

local AFFINITY_USER, AFFINITY_SHARED = 10, 5
local HOLDER_SAMPLE = 3

-- The job's affinity for this worker, and the LoRAs of the job it lacks.
local function lora_affinity(loras, held_key)
  if #loras == 0 then return 0, loras end
  local hashes = {}
  for i, l in ipairs(loras) do hashes[i] = l.sha256 end
  local held = redis.call('SMISMEMBER', held_key, unpack(hashes))
  local score, missing = 0, {}
  for i, l in ipairs(loras) do
    if held[i] == 1 then
      score = score + (l.scope == 'shared' and AFFINITY_SHARED or AFFINITY_USER)
    else
      missing[#missing + 1] = l
    end
  end
  return score, missing
end

-- Whether other workers hold one of the job's LoRAs, and whether one of them is idle.
local function held_elsewhere(base, loras)
  local any = false
  for _, l in ipairs(loras) do
    local holders = base .. ':lora:' .. l.sha256 .. ':holders'
    for _, w in ipairs(redis.call('SRANDMEMBER', holders, HOLDER_SAMPLE)) do
      any = true
      if redis.call('HGET', base .. ':worker:' .. w, 'state') == 'idle' then
        -- Wake-ups are targeted (one idle slot per job): make sure the holder looks now.
        redis.call('SPUBLISH', base .. ':control:' .. w, '{"type":"wake"}')
        return true, true
      end
    end
  end
  return any, false
end

-- cands: {zkey, score, service} of each set with an eligible head; best: the same of the claim's
-- choice so far. Returns the chosen {id, score, service} (nil when the window holds every
-- candidate back) and a wait hint (ms).
local function affine_choice(base, cands, caps, now, held_key, opt, best)
  local holds = redis.call('SCARD', held_key) > 0
  local hold_max = math.max(opt.grace_ms, opt.window_ms)
  if not holds and hold_max <= 0 then return best, nil end
  local pick, pick_key, hint = nil, nil, nil

  local function consider(job_id, score, service)
    local m = redis.call('HMGET', base .. ':job:' .. job_id, 'loras', 'customer_id',
      'avoid_worker', 'avoid_until', 'created_at')
    local customer = m[2] or ''
    if (customer ~= '' and caps.denied[customer])
        or (m[3] == caps.worker_id and (tonumber(m[4]) or 0) > now) then
      return
    end
    local loras = {}
    if m[1] and #m[1] > 2 then loras = cjson.decode(m[1]) end
    local aff, missing = 0, loras
    if holds then aff, missing = lora_affinity(loras, held_key) end
    local waited = now - (tonumber(m[5]) or now)
    local hold_for = 0
    if #missing > 0 and waited < hold_max then
      local any, idle = held_elsewhere(base, missing)
      if idle then hold_for = hold_max elseif any then hold_for = opt.window_ms end
    end
    if waited < hold_for then
      local wait = hold_for - waited
      if hint == nil or wait < hint then hint = wait end
      return
    end
    -- Rank: overdue first, then affinity, then score (priority and age).
    local key = {(opt.patience_ms > 0 and waited >= opt.patience_ms) and 1 or 0, aff,
      -tonumber(score)}
    if pick_key == nil or key[1] > pick_key[1] or (key[1] == pick_key[1] and (key[2] > pick_key[2]
        or (key[2] == pick_key[2] and key[3] > pick_key[3]))) then
      pick, pick_key = {id = job_id, score = score, service = service}, key
    end
  end

  -- The plain choice always competes (it may lie past the scan, found by the deny-list search).
  consider(best.id, best.score, best.service)
  -- A worker that holds no LoRA has no affinity for any job: the plain choice stands unless
  -- the grace or window holds it back, so the scan (an HMGET per job) would change nothing.
  -- Most claims are of this kind; skipping it halves the Redis time of a no-LoRA claim.
  if not holds and pick ~= nil then return pick, hint end
  local band_end = fmt_int((math.floor(tonumber(best.score) / SEQ_SPAN) + 1) * SEQ_SPAN)
  table.sort(cands, function(a, b) return tonumber(a.score) < tonumber(b.score) end)
  local seen = 0
  for _, c in ipairs(cands) do
    if seen >= opt.scan then break end
    local ids = redis.call('ZRANGE', c.zkey, '-inf', '(' .. band_end, 'BYSCORE', 'LIMIT', 0,
      opt.scan - seen, 'WITHSCORES')
    for i = 1, #ids, 2 do
      seen = seen + 1
      if ids[i] ~= best.id then consider(ids[i], ids[i + 1], c.service) end
    end
  end
  return pick, hint
end

---------------------------------------------------------------------------------------------------
-- claim: fair shares between customers (issue 10)
--
-- Within a priority, customers share the workers by weight: start-time fair queueing, charged
-- per job. Per service, fair:{service} holds each customer's finish tag F (its virtual time) and,
-- under the member CLOCK, the service's virtual clock V. A customer's start tag is max(F, V).
-- A claim that found its best job (priority, then age) compares, among the customers with jobs
-- at that priority in up to FAIR_CLASSES of the classes it can run, their start tags, and takes
-- the head of the customer with the lowest (ties: the oldest head). Taking a job of
-- customer c with start S sets F_c = S + 1/weight_c and V = max(V, S). So a customer with a
-- backlog gets every idle worker while nobody else waits, a customer that has been served less
-- goes first, and one that was away does not bank credit (its start is V, not its old F).
--
-- Bounded: each class's customers at a priority are indexed in pending:{class}:customers:{p},
-- scored by a lower bound of their start tag (tags only rise; entries are raised when read), and a
-- claim reads the first `scan` entries of at most FAIR_CLASSES such indexes and tries at most
-- FAIR_TRIES customers' heads: nothing depends on the number of customers or jobs. Weights live
-- in fair_weights (customer -> weight, default 1), set with `emp fair-shares` or PUT /api/fair-shares.

local FAIR_CLASSES = 4      -- classes of the best job's priority compared per service
local FAIR_TRIES = 4        -- customers' heads read before the plain choice is kept
local FAIR_CLOCK = '~clock' -- the member of fair:{service} holding V (never a customer id)
local WEIGHT_MIN, WEIGHT_MAX = 0.01, 1000

local function fmt_tag(x)
  return string.format('%.17g', x)
end

-- walked: per service, the ready-set entries (class, listed score, ...) the claim's walk read;
-- best: the plain choice {id, score, service, customer, zkey}. Returns the job to take (the same
-- shape; zkey is its customer's set in its class), the candidates sorted by start tag, and a wait
-- hint (ms).
local function fair_choice(base, caps, now, scan, best, walked)
  local band = band_of(best.score)
  local band_end = (band + 1) * SEQ_SPAN
  local priority = fmt_int(PRIORITY_MAX - band)
  local cands = {}
  local per_service = {}
  local rivals = false
  for _, service in ipairs(caps.services) do
    local entries = walked[service] or {}
    local svc = {}
    if service == best.service then
      svc[1] = {service = service, customer = best.customer, best = true, order = 0}
    end
    local classes = 0
    for i = 1, #entries, 2 do
      if classes >= FAIR_CLASSES or tonumber(entries[i + 1]) >= band_end then break end
      classes = classes + 1
      local pending = base .. ':pending:' .. entries[i]
      local idx = pending .. ':customers:' .. priority
      local listed = redis.call('ZRANGE', idx, 0, scan - 1, 'WITHSCORES')
      for j = 1, #listed, 2 do
        local c = listed[j]
        if not caps.denied[c] and (not caps.allowed or caps.allowed[c]) then
          svc[#svc + 1] = {service = service, customer = c, pending = pending, idx = idx,
            zkey = pending .. ':cust:' .. c, recorded = tonumber(listed[j + 1]), order = #svc + 1}
          rivals = rivals or c ~= best.customer or service ~= best.service
        end
      end
    end
    per_service[service] = svc
  end
  if not rivals then
    -- Only the plain choice's customer is waiting, in the plain choice's service: it goes next
    -- whatever the tags say (its entries share the one tag of that service's clock, and the
    -- plain choice wins a tie), so none is read.
    for _, service in ipairs(caps.services) do
      for _, e in ipairs(per_service[service]) do
        e.start = 0
        cands[#cands + 1] = e
      end
    end
    return best, cands, nil
  end
  for _, service in ipairs(caps.services) do
    local svc = per_service[service]
    if #svc > 0 then
      local names = {FAIR_CLOCK}
      for i, e in ipairs(svc) do names[i + 1] = e.customer end
      local tags = redis.call('ZMSCORE', base .. ':fair:' .. service, unpack(names))
      local v = tonumber(tags[1]) or 0
      for i, e in ipairs(svc) do
        e.start = math.max(tonumber(tags[i + 1]) or v, v)
        -- Tags only rise: keep the index's lower bound close, so the next read sorts right.
        if e.idx and e.start > e.recorded then
          redis.call('ZADD', e.idx, 'XX', fmt_tag(e.start), e.customer)
        end
        cands[#cands + 1] = e
      end
    end
  end
  table.sort(cands, function(a, b)
    if a.start ~= b.start then return a.start < b.start end
    if a.best ~= b.best then return a.best == true end
    if a.service ~= b.service then return a.service < b.service end
    return a.order < b.order
  end)
  local lo = fmt_int(band * SEQ_SPAN)
  local hint = nil
  local tried = 0
  local i = 1
  -- Group by start tag, lowest first; within a group the oldest head wins (the plain choice,
  -- sorted first in its group, is the oldest of all).
  while i <= #cands and tried < FAIR_TRIES do
    local start = cands[i].start
    local found = nil
    while i <= #cands and cands[i].start == start do
      local e = cands[i]
      i = i + 1
      if e.best then return best, cands, hint end
      if tried < FAIR_TRIES then
        tried = tried + 1
        local job_id, score, wait = eligible_head(base, e.zkey, caps, now, e.pending, e.service)
        if wait and (hint == nil or wait < hint) then hint = wait end
        if job_id and band_of(score) <= band then
          if found == nil or better(score, job_id, found.score, found.id) then
            found = {id = job_id, score = score, service = e.service, customer = e.customer,
              zkey = e.zkey}
          end
        elseif not job_id and not wait
            and redis.call('ZCOUNT', e.zkey, lo, '(' .. fmt_int(band_end)) == 0 then
          redis.call('ZREM', e.idx, e.customer)  -- listed but gone (quarantined, say)
        end
      end
    end
    if found then return found, cands, hint end
  end
  return best, cands, hint
end

-- The sets the affinity may re-rank in fair mode: the chosen customer's, then those of the
-- customers whose start tag ties its own (any of them may go next without breaking fairness).
local function fair_sets(cands, pick)
  local start = nil
  for _, e in ipairs(cands) do
    if e.customer == pick.customer and e.service == pick.service then
      start = e.start
      break
    end
  end
  local sets = {{zkey = pick.zkey, score = pick.score, service = pick.service}}
  local seen = {[pick.zkey] = true}
  for _, e in ipairs(cands) do
    if start == nil or e.start > start then break end
    if e.zkey and not seen[e.zkey] then
      seen[e.zkey] = true
      sets[#sets + 1] = {zkey = e.zkey, score = pick.score, service = e.service}
    end
  end
  return sets
end

-- Charge the claimed job to its customer: F = max(F, V) + 1/weight; V = max(V, start). Customers
-- whose F fell behind V are dropped (their start is V either way), so fair:{service} holds only
-- customers served ahead of the clock.
local function fair_charge(base, service, customer)
  local key = base .. ':fair:' .. service
  local tags = redis.call('ZMSCORE', key, FAIR_CLOCK, customer)
  local v = tonumber(tags[1]) or 0
  local start = math.max(tonumber(tags[2]) or v, v)
  local w = tonumber(redis.call('HGET', base .. ':fair_weights', customer))
  if w == nil or w ~= w then w = 1 end
  w = math.min(math.max(w, WEIGHT_MIN), WEIGHT_MAX)
  if start > v then
    redis.call('ZADD', key, fmt_tag(start + 1 / w), customer, fmt_tag(start), FAIR_CLOCK)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. fmt_tag(start))
  else
    redis.call('ZADD', key, fmt_tag(start + 1 / w), customer)
    if tags[1] == false then redis.call('ZADD', key, fmt_tag(v), FAIR_CLOCK) end
  end
end

---------------------------------------------------------------------------------------------------
-- functions

-- A job's LoRAs (emp_core.jobs.loras.LoraRef): a JSON array of at most 8 objects, each with a
-- sha256 of 64 lowercase hex digits (what affinity reads), a scope of user or shared, no file twice.
local function check_loras(text)
  if type(text) ~= 'string' or not string.match(text, '^%s*%[') then
    bad('INVALID', 'loras', 'is not a JSON array')
  end
  local ok, list = pcall(cjson.decode, text)
  if not ok or type(list) ~= 'table' or not is_seq(list) then
    bad('INVALID', 'loras', 'is not a JSON array')
  end
  if #list > 8 then bad('INVALID', 'loras', 'may hold at most 8 LoRAs') end
  local seen = {}
  for i, ref in ipairs(list) do
    local field = 'loras.' .. (i - 1)
    if type(ref) ~= 'table' or (next(ref) ~= nil and is_seq(ref)) then
      bad('INVALID', field, 'must be an object')
    end
    if type(ref.sha256) ~= 'string' or not string.match(ref.sha256, '^[0-9a-f]+$')
        or #ref.sha256 ~= 64 then
      bad('INVALID', field .. '.sha256', 'must be 64 lowercase hex digits')
    end
    if ref.scope ~= 'user' and ref.scope ~= 'shared' then
      bad('INVALID', field .. '.scope', 'must be user or shared')
    end
    if seen[ref.sha256] then bad('INVALID', field, 'names a LoRA file twice') end
    seen[ref.sha256] = true
  end
end

-- KEYS: per job [job, events, seq, classes registry, pending, pending_count, workflow, customer jobs],
-- then, for a submit with an Idempotency-Key (one job), the key's record.
-- ARGV: base, njobs, events_maxlen, retention_s, then per job 14 fields (see SUBMIT_FIELDS), then
-- for an Idempotency-Key: owner, key digest, body digest, ttl_s.
-- Returns the ids; with an Idempotency-Key {'submitted', id} or {'replayed', id of the earlier job}.
local SUBMIT_FIELDS = {'id', 'service', 'priority', 'payload', 'requirements', 'class_id',
  'customer_id', 'workflow_id', 'step', 'total_steps', 'max_attempts', 'timeout_s', 'traceparent',
  'loras'}
local SUBMIT_KEYS = 8
local IDEMPOTENCY_TTL_MAX = 30 * 24 * 3600

-- The Idempotency-Key tail of a submit's arguments (emp_core.queue.idempotency), checked.
local function idempotency_args(base, key, args, i)
  local owner, key_digest, body_digest = args[i], args[i + 1], args[i + 2]
  need_ident(owner, 'owner')
  for field, digest in pairs({key_digest = key_digest, body_digest = body_digest}) do
    if type(digest) ~= 'string' or #digest < 16 or #digest > 64
        or not string.match(digest, '^[0-9a-f]+$') then
      bad('INVALID', field, 'must be 16-64 lowercase hex digits')
    end
  end
  local ttl = int_arg(args[i + 3], 'ttl_s', 1, IDEMPOTENCY_TTL_MAX)
  need_key(key, base .. ':idem:' .. owner .. ':' .. key_digest, 'idempotency')
  return {key = key, body = body_digest, ttl = ttl}
end

local function emp_submit(keys, args)
  local base = need_base(args[1])
  local n = int_arg(args[2], 'jobs', 1, 100000)
  local maxlen = int_arg(args[3], 'events_maxlen', 1)
  local retention = int_arg(args[4], 'retention_s', 1)
  local width = #SUBMIT_FIELDS
  local once = nil
  if n == 1 and #args == 4 + width + 4 and #keys == SUBMIT_KEYS + 1 then
    once = idempotency_args(base, keys[SUBMIT_KEYS + 1], args, 4 + width + 1)
    -- The check and the submit are one atomic call: two requests carrying one key cannot both
    -- submit, and a replay costs the client one round trip.
    local earlier = redis.call('GET', once.key)
    if earlier then
      local earlier_id, earlier_body = string.match(earlier, '^(%S+) (%S+)$')
      if earlier_body ~= once.body then
        bad('IDEMPOTENCY', 'Idempotency-Key',
          'this key was used with a different request; use a new key per job')
      end
      return {'replayed', earlier_id}
    end
  elseif #args ~= 4 + n * width or #keys ~= n * SUBMIT_KEYS then
    bad('INVALID', 'arguments', 'expected ' .. n .. ' jobs of ' .. SUBMIT_KEYS .. ' keys and '
      .. width .. ' values each')
  end
  -- Validate every job before writing anything.
  local jobs = {}
  local new_workflows = {}
  local objects, lora_lists = {}, {}
  for i = 1, n do
    local j = {}
    for f, name in ipairs(SUBMIT_FIELDS) do j[name] = args[4 + (i - 1) * width + f] end
    local k = (i - 1) * SUBMIT_KEYS
    j.keys = {base = base, job = keys[k + 1], events = keys[k + 2], seq = keys[k + 3],
      registry = keys[k + 4],
      pending = keys[k + 5], count = keys[k + 6], workflow = keys[k + 7], customer = keys[k + 8]}
    j.priority = int_arg(j.priority, 'priority', 0, PRIORITY_MAX)
    j.max_attempts = int_arg(j.max_attempts, 'max_attempts', 1, 100)
    if j.step ~= '' then int_arg(j.step, 'step', 1) end
    if j.total_steps ~= '' then int_arg(j.total_steps, 'total_steps', 1) end
    if num_arg(j.timeout_s, 'timeout_s', 0, 7 * 24 * 3600) <= 0 then
      bad('INVALID', 'timeout_s', 'must be greater than 0, got ' .. j.timeout_s)
    end
    need_ident(j.id, 'id')
    if not is_service(j.service) then
      bad('INVALID', 'service', 'must be 1-64 of a-z, 0-9, _ and -, got ' .. tostring(j.service))
    end
    if j.customer_id ~= '' then need_ident(j.customer_id, 'customer_id') end
    if j.workflow_id ~= '' then need_ident(j.workflow_id, 'workflow_id') end
    if (j.step ~= '' or j.total_steps ~= '') and j.workflow_id == '' then
      bad('INVALID', 'workflow_id', 'step and total_steps belong to a workflow; give workflow_id too')
    end
    if j.step ~= '' and j.total_steps ~= '' and tonumber(j.step) > tonumber(j.total_steps) then
      bad('INVALID', 'step', 'step ' .. j.step .. ' is past total_steps ' .. j.total_steps)
    end
    if #j.traceparent > 512 then bad('INVALID', 'traceparent', 'is longer than 512 characters') end
    -- A class's text is checked once per library load (its id is the hash of service and text,
    -- so an id seen with the very same text needs neither the decode nor the hash again); a
    -- payload or LoRA list once per call (a bulk submit often repeats them). Lua interns
    -- strings, so the lookups cost no hashing.
    local class_key = j.service .. '\n' .. j.requirements
    if class_texts[j.class_id] ~= class_key then
      check_requirements(j.requirements)
      if j.class_id ~= class_id_of(j.service, j.requirements) then
        bad('INVALID', 'class_id', 'does not match the service and requirements (expected '
          .. class_id_of(j.service, j.requirements) .. ')')
      end
      if class_text_count >= CACHE_MAX then class_texts, class_text_count = {}, 0 end
      class_texts[j.class_id] = class_key
      class_text_count = class_text_count + 1
    end
    if not objects[j.payload] then
      if not is_object_text(j.payload) then bad('INVALID', 'payload', 'is not a JSON object') end
      local ok, payload = pcall(cjson.decode, j.payload)
      if not ok or type(payload) ~= 'table' then bad('INVALID', 'payload', 'is not a JSON object') end
      objects[j.payload] = true
    end
    if j.loras ~= '[]' and not lora_lists[j.loras] then
      check_loras(j.loras)
      lora_lists[j.loras] = true
    end
    local kk = j.keys
    need_key(kk.job, base .. ':job:' .. j.id, 'job')
    need_key(kk.events, base .. ':events:' .. j.id, 'events')
    need_key(kk.seq, base .. ':seq', 'seq')
    need_key(kk.registry, base .. ':classes:' .. j.service, 'classes')
    need_key(kk.pending, base .. ':pending:' .. j.class_id, 'pending')
    need_key(kk.count, base .. ':pending_count', 'pending_count')
    need_key(kk.workflow, base .. ':workflow:' .. j.workflow_id, 'workflow')
    need_key(kk.customer, base .. ':customer:' .. j.customer_id .. ':jobs', 'customer')
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
  local ids = {}
  local live = {}
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
      j.requirements, now, live)
    -- Jobs without an owner (the CLI's, make dev's demo) are indexed too, under the customer '',
    -- so that an admin's "Everyone" list shows them.
    redis.call('ZADD', j.keys.customer, seq, j.id)
    emit(base, j.id, j.keys.events, maxlen, j.service, {type = 'submitted', status = 'pending', at = now})
    ids[i] = j.id
  end
  if once then
    redis.call('SET', once.key, ids[1] .. ' ' .. once.body, 'EX', once.ttl)
    return {'submitted', ids[1]}
  end
  return ids
end

-- KEYS: worker, leases, fence, delayed, then one classes registry per service in caps.services,
-- then the set of LoRA hashes the worker holds.
-- ARGV: base, capabilities JSON, lease_ms, events_maxlen, promote_limit, slot ('' or an index),
-- then the affinity's scan (jobs; 0: off), patience_ms, grace_ms and window_ms (affine_choice),
-- then the fair share's scan (customers per class; 0 or absent: off; see fair_choice).
-- Returns {'job', HGETALL of the claimed job} or {'none', ms until worth trying again or -1}.
-- A worker slot's index, or '' for a caller that is not a slot (the CLI, a test).
local function slot_arg(value)
  if value == nil or value == '' then return '' end
  return fmt_int(int_arg(value, 'slot', 0, 4096))
end

-- Register the worker's profile for a service on its first claim (or after it retired) and start
-- its first pass over the class registry (build_step does the work, a step per claim).
local function ensure_profile(base, service, prof, now)
  if redis.call('ZADD', base .. ':profiles_seen:' .. service, now, prof.id) == 0 then return end
  redis.call('HSET', base .. ':profiles:' .. service, prof.id, prof.text)
  local ready = ready_key(base, service, prof.id)
  redis.call('DEL', ready)
  redis.call('ZADD', ready, 0, BUILD_MARK .. '0')
end

-- One step of a profile's first pass: match the next BUILD_STEP classes of the registry (HSCAN,
-- whose full iteration returns every class present from its start to its end; a class that
-- appears meanwhile is matched by its submit) and list the runnable ones in the ready set. A class
-- that cannot be decoded is quarantined here. Returns whether the pass goes on.
local function build_step(base, service, pid, registry, ready, mark, now)
  local reply = redis.call('HSCAN', registry, string.sub(mark, #BUILD_MARK + 1), 'COUNT', BUILD_STEP)
  redis.call('ZREM', ready, mark)
  local flat = reply[2]
  for i = 1, #flat, 2 do
    local class_id, text = flat[i], flat[i + 1]
    local ok, why = pcall(check_requirements, text)
    if not ok then
      redis.call('HDEL', registry, class_id)
      quarantine(base, 'class', class_id, type(why) == 'table' and why.err or tostring(why), now)
    elseif profile_matches(base, service, pid, class_id, text) then
      local head = redis.call('ZRANGE', base .. ':pending:' .. class_id, 0, 0, 'WITHSCORES')
      if head[2] then redis.call('ZADD', ready, head[2], class_id) end
    end
  end
  if reply[1] == '0' then return false end
  redis.call('ZADD', ready, 0, BUILD_MARK .. reply[1])
  return true
end

-- The first CLASS_WINDOW entries of a profile's ready set (class, listed score, ...), after a step
-- of its first pass when one is under way; and whether the pass goes on.
local function ready_window(base, service, pid, registry, ready, now)
  local entries = redis.call('ZRANGE', ready, 0, CLASS_WINDOW - 1, 'WITHSCORES')
  local mark = entries[1]
  if mark == nil or string.sub(mark, 1, #BUILD_MARK) ~= BUILD_MARK then return entries, false end
  local going = build_step(base, service, pid, registry, ready, mark, now)
  entries = redis.call('ZRANGE', ready, 0, CLASS_WINDOW - 1, 'WITHSCORES')
  if going then
    table.remove(entries, 1)
    table.remove(entries, 1)
  end
  return entries, going
end

-- KEYS of a claim: worker, leases, fence, delayed, then one classes registry per service, then
-- the set of LoRA hashes the worker holds.
local function check_claim_keys(keys, base, caps)
  if #keys ~= 5 + #caps.services then
    bad('INVALID', 'keys', 'expected one classes key per service after the first four, then the '
      .. 'LoRA set')
  end
  need_key(keys[1], base .. ':worker:' .. caps.worker_id, 'worker')
  need_key(keys[2], base .. ':leases', 'leases')
  need_key(keys[3], base .. ':fence', 'fence')
  need_key(keys[4], base .. ':delayed', 'delayed')
  for s, service in ipairs(caps.services) do
    need_key(keys[4 + s], base .. ':classes:' .. service, 'classes')
  end
  need_key(keys[5 + #caps.services], base .. ':worker:' .. caps.worker_id .. ':loras', 'loras')
end

-- The fair share's argument: customers compared per class (0: off, first-submitted first).
local function fair_arg(value)
  if value == nil or value == '' then return 0 end
  return int_arg(value, 'fair_scan', 0, 64)
end

-- The affinity's four arguments from ARGV[i] on (see affine_choice).
local function affinity_args(args, i)
  return {scan = int_arg(args[i], 'affinity_scan', 0, 1000),
    patience_ms = int_arg(args[i + 1], 'affinity_patience_ms', 0),
    grace_ms = int_arg(args[i + 2], 'affinity_grace_ms', 0),
    window_ms = int_arg(args[i + 3], 'affinity_window_ms', 0)}
end

-- `now`: the caller's clock reading when emp_complete claims the next job (one TIME per call).
local function emp_claim(keys, args, now)
  local base = need_base(args[1])
  local caps = load_caps(args[2])
  local lease_ms = int_arg(args[3], 'lease_ms', 1)
  local maxlen = int_arg(args[4], 'events_maxlen', 1)
  local promote_limit = int_arg(args[5], 'promote_limit', 0, 10000)
  local slot = slot_arg(args[6])
  check_claim_keys(keys, base, caps)
  local affinity = affinity_args(args, 7)
  local fair_scan = fair_arg(args[11])
  local worker_key, leases, fence, delayed = keys[1], keys[2], keys[3], keys[4]
  now = now or now_ms()
  claim_reads = {}  -- job fields read by this call (eligible_head), valid until its writes
  promote_due(base, delayed, now, promote_limit, maxlen)

  local best_id, best_score, best_service, hint = nil, nil, nil, nil
  local best_customer, best_zkey = nil, nil
  local cands = {}
  local walked = {}
  local building = false
  for s, service in ipairs(caps.services) do
    local prof = caps.profiles[service]
    ensure_profile(base, service, prof, now)
    local ready = ready_key(base, service, prof.id)
    local entries, going = ready_window(base, service, prof.id, keys[4 + s], ready, now)
    building = building or going
    walked[service] = entries
    for i = 1, #entries, 2 do
      local class_id, listed = entries[i], tonumber(entries[i + 1])
      -- Listed scores are lower bounds: nothing further down can beat the best found.
      if best_score ~= nil and listed > tonumber(best_score) then break end
      local class_key = base .. ':pending:' .. class_id
      local head = redis.call('ZRANGE', class_key, 0, 0, 'WITHSCORES')
      if head[1] == nil then
        redis.call('ZREM', ready, class_id)  -- drained since it was listed
      else
        if tonumber(head[2]) > listed then redis.call('ZADD', ready, 'XX', head[2], class_id) end
        if best_score == nil or tonumber(head[2]) <= tonumber(best_score) then
          for _, zkey in ipairs(candidate_sets(class_key, caps)) do
            local job_id, score, wait, customer = eligible_head(base, zkey, caps, now, class_key,
              service)
            if wait and (hint == nil or wait < hint) then hint = wait end
            if job_id then cands[#cands + 1] = {zkey = zkey, score = score, service = service} end
            if job_id and better(score, job_id, best_score, best_id) then
              best_id, best_score, best_service = job_id, score, service
              best_customer = customer or ''
              best_zkey = class_key .. ':cust:' .. best_customer
            end
          end
        end
      end
    end
  end

  if best_id ~= nil and fair_scan > 0 and not caps.workflow_id then
    -- Fair shares within the priority (a workflow-pinned worker serves one customer anyway).
    local pick, fair, wait = fair_choice(base, caps, now, fair_scan, {id = best_id,
      score = best_score, service = best_service, customer = best_customer, zkey = best_zkey},
      walked)
    if wait and (hint == nil or wait < hint) then hint = wait end
    best_id, best_score, best_service = pick.id, pick.score, pick.service
    -- The affinity then ranks only jobs of customers as entitled to go next as this one.
    cands = fair_sets(fair, pick)
  end

  if best_id ~= nil and affinity.scan > 0 then
    local pick, wait = affine_choice(base, cands, caps, now, keys[#keys], affinity,
      {id = best_id, score = best_score, service = best_service})
    if wait and (hint == nil or wait < hint) then hint = wait end
    best_id, best_score, best_service = nil, nil, nil
    if pick then best_id, best_score, best_service = pick.id, pick.score, pick.service end
  end

  local member = slot ~= '' and (caps.worker_id .. '#' .. slot) or nil
  -- A first pass under way may not have listed a runnable class yet: worth trying again at once.
  if building then hint = 0 end
  if best_id == nil then
    local next_due = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')[2]
    if next_due then
      local wait = math.max(0, tonumber(next_due) - now)
      if hint == nil or wait < hint then hint = wait end
    end
    if member then
      -- Idle: a job this slot can run that becomes pending wakes it (see wake_one).
      for _, service in ipairs(caps.services) do
        redis.call('ZADD', idle_key(base, service, caps.profiles[service].id), now, member)
      end
    end
    return {'none', hint or -1}
  end
  if member then
    for _, service in ipairs(caps.services) do
      redis.call('ZREM', idle_key(base, service, caps.profiles[service].id), member)
    end
  end

  local jk = base .. ':job:' .. best_id
  local m = claim_reads[best_id]
  local f = m and {m[2], m[12], m[7], m[13], m[14]}
    or redis.call('HMGET', jk, 'customer_id', 'workflow_id', 'class_id', 'created_at', 'attempts')
  claim_reads = {}
  unindex_pending(derived_keys(base, best_service, f[3]), best_id, best_score, f[1], f[2],
    best_service, f[3])
  if fair_scan > 0 then fair_charge(base, best_service, f[1] or '') end
  -- Keep this profile's own entry exact (other profiles' are raised lazily by their claims).
  local own = ready_key(base, best_service, caps.profiles[best_service].id)
  local next_head = redis.call('ZRANGE', base .. ':pending:' .. f[3], 0, 0, 'WITHSCORES')
  if next_head[1] == nil then
    redis.call('ZREM', own, f[3])
  else
    redis.call('ZADD', own, 'XX', next_head[2], f[3])
  end
  local token = redis.call('INCR', fence)
  local attempt = (tonumber(f[5]) or 0) + 1
  local deadline = now + lease_ms
  redis.call('HSET', jk, 'status', 'claimed', 'worker_id', caps.worker_id, 'token', token,
    'claimed_at', now, 'lease_deadline', deadline, 'attempts', attempt)
  redis.call('ZADD', leases, deadline, best_id)
  if redis.call('EXISTS', worker_key) == 1 then
    redis.call('HSET', worker_key, 'state', 'busy', 'job_id', best_id, 'last_seen', now)
  end
  emit(base, best_id, base .. ':events:' .. best_id, maxlen, best_service,
    {type = 'claimed', status = 'claimed', at = now, attempt = attempt, worker_id = caps.worker_id,
      machine_id = caps.machine_id}, f[4])
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
-- The arguments every report on a held job shares: the base, the job id and the token, and the
-- job's own keys in KEYS.
local function job_args(keys, args, nkeys)
  need_keys(keys, nkeys)
  local base = need_base(args[1])
  local job_id = need_ident(args[2], 'job_id')
  local token = args[3]
  if type(token) ~= 'string' or not string.match(token, '^%d*$') then
    bad('INVALID', 'token', 'must be a fencing token (digits), got ' .. tostring(token))
  end
  need_key(keys[1], base .. ':job:' .. job_id, 'job')
  return base, job_id, token
end

local function emp_heartbeat(keys, args)
  local base, job_id, token = job_args(keys, args, 2)
  need_key(keys[2], base .. ':leases', 'leases')
  local lease_ms = int_arg(args[4], 'lease_ms', 1)
  holder(keys[1], job_id, token)
  local deadline = now_ms() + lease_ms
  redis.call('HSET', keys[1], 'lease_deadline', deadline)
  redis.call('ZADD', keys[2], 'XX', deadline, job_id)
  return deadline
end

-- KEYS: job, events. ARGV: base, job_id, token, progress (0-100), message, events_maxlen[, preview].
local function emp_progress(keys, args)
  local base, job_id, token = job_args(keys, args, 2)
  need_key(keys[2], base .. ':events:' .. job_id, 'events')
  local progress = num_arg(args[4], 'progress', 0, 100)
  local message = args[5] or ''
  if #message > 8000 then bad('INVALID', 'message', 'is longer than 8000 characters') end
  local maxlen = int_arg(args[6], 'events_maxlen', 1)
  -- An optional small preview image (a data: URL) rides in the event only, never in the job.
  local preview = args[7]
  if preview == '' then preview = nil end
  if preview ~= nil and (#preview > 32768 or string.sub(preview, 1, 11) ~= 'data:image/') then
    bad('INVALID', 'preview', 'must be a data:image/ URL of at most 32768 bytes')
  end
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
    progress = progress, message = message, attempt = job.attempts, worker_id = job.worker_id,
    preview = preview})
  return 1
end

local function set_idle(worker_key, now)
  if redis.call('EXISTS', worker_key) == 1 then
    redis.call('HSET', worker_key, 'state', 'idle', 'job_id', '', 'last_seen', now)
  end
end

-- KEYS: job, events, leases, worker, finished; to claim the next job in the same call, also
-- fence, delayed, one classes registry per service and the worker's LoRA set (as emp_claim).
-- ARGV: base, job_id, token, result JSON, retention_s, maxlen; to claim the next job, also
-- capabilities JSON, lease_ms, promote_limit, slot, affinity scan, patience_ms, grace_ms,
-- window_ms, fair scan.
-- Returns 1, or with a next claim what emp_claim returns: one round trip per job instead of two.
local function emp_complete(keys, args)
  local claim_next = args[7] ~= nil
  local caps
  local base, job_id, token = job_args(keys, {args[1], args[2], args[3]}, #keys)
  local result = args[4]
  need_key(keys[2], base .. ':events:' .. job_id, 'events')
  need_key(keys[3], base .. ':leases', 'leases')
  need_key(keys[5], base .. ':finished', 'finished')
  if claim_next then
    caps = load_caps(args[7])
    int_arg(args[8], 'lease_ms', 1)
    int_arg(args[9], 'promote_limit', 0, 10000)
    slot_arg(args[10])
    affinity_args(args, 11)
    fair_arg(args[15])
    local claim_keys = {keys[4], keys[3], keys[6], keys[7]}
    for i = 8, #keys do claim_keys[#claim_keys + 1] = keys[i] end
    check_claim_keys(claim_keys, base, caps)
  else
    need_keys(keys, 5)
  end
  local retention = int_arg(args[5], 'retention_s', 1)
  local maxlen = int_arg(args[6], 'events_maxlen', 1)
  local ok = pcall(cjson.decode, result)
  if not ok then bad('INVALID', 'result', 'is not JSON') end
  local job = holder(keys[1], job_id, token)
  if not claim_next then
    need_key(keys[4], base .. ':worker:' .. (job.worker_id or ''), 'worker')
  end
  local now = now_ms()
  redis.call('HSET', keys[1], 'status', 'completed', 'result', result, 'progress', 100,
    'finished_at', now, 'token', '', 'lease_deadline', '')
  redis.call('ZREM', keys[3], job_id)
  -- With a next claim the worker is idle only if that claim finds nothing (below); a job it takes
  -- makes it busy again, so the idle write would be overwritten in the same call.
  if not claim_next then set_idle(keys[4], now) end
  to_archive(keys[5], job_id, now)
  emit(base, job_id, keys[2], maxlen, job.service, {type = 'completed', status = 'completed',
    at = now, attempt = job.attempts, worker_id = job.worker_id, progress = 100})
  redis.call('EXPIRE', keys[1], retention)
  redis.call('EXPIRE', keys[2], retention)
  if not claim_next then return 1 end
  local claim_keys = {keys[4], keys[3], keys[6], keys[7]}
  for i = 8, #keys do claim_keys[#claim_keys + 1] = keys[i] end
  local reply = emp_claim(claim_keys, {base, args[7], args[8], args[6], args[9], args[10],
    args[11], args[12], args[13], args[14], args[15]}, now)
  if reply[1] == 'none' then set_idle(keys[4], now) end
  return reply
end

-- KEYS: job, events, leases, worker, delayed, dead, finished.
-- ARGV: base, job_id, token, error, retryable (0/1), delay_ms, avoid_grace_ms, retention_s, maxlen,
-- and optionally the classification (ADR-009): category, pattern id, user message.
-- Returns 'retrying' or 'failed'.
local function emp_fail(keys, args)
  local base, job_id, token = job_args(keys, args, 7)
  local message = args[4]
  need_key(keys[2], base .. ':events:' .. job_id, 'events')
  need_key(keys[3], base .. ':leases', 'leases')
  need_key(keys[5], base .. ':delayed', 'delayed')
  need_key(keys[6], base .. ':dead', 'dead')
  need_key(keys[7], base .. ':finished', 'finished')
  if #message > 8000 then bad('INVALID', 'error', 'is longer than 8000 characters') end
  local retryable = int_arg(args[5], 'retryable', 0, 1)
  local delay = int_arg(args[6], 'delay_ms', 0)
  local grace = int_arg(args[7], 'avoid_grace_ms', 0)
  local retention = int_arg(args[8], 'retention_s', 1)
  local maxlen = int_arg(args[9], 'events_maxlen', 1)
  local job = holder(keys[1], job_id, token)
  need_key(keys[4], base .. ':worker:' .. (job.worker_id or ''), 'worker')
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
      at = now, attempt = job.attempts, worker_id = job.worker_id, error = message,
      category = args[10], retry_at = due})
    return 'retrying'
  end
  redis.call('HSET', keys[1], 'status', 'failed', 'error', message, 'finished_at', now,
    'token', '', 'lease_deadline', '')
  redis.call('ZADD', keys[6], now, job_id)
  to_archive(keys[7], job_id, now)
  emit(base, job_id, keys[2], maxlen, job.service, {type = 'failed', status = 'failed', at = now,
    attempt = job.attempts, worker_id = job.worker_id, error = message, category = args[10]})
  -- The dead-letter set keeps the job hash (no expiry) until an operator deals with it.
  redis.call('EXPIRE', keys[2], retention)
  return 'failed'
end

-- A worker hands back a job it will not finish (shutdown): pending again at once, and the
-- attempt does not count. KEYS: job, events, leases, worker. ARGV: base, job_id, token, reason,
-- maxlen.
local function emp_release(keys, args)
  local base, job_id, token = job_args(keys, args, 4)
  local reason = args[4]
  need_key(keys[2], base .. ':events:' .. job_id, 'events')
  need_key(keys[3], base .. ':leases', 'leases')
  local maxlen = int_arg(args[5], 'events_maxlen', 1)
  local job = holder(keys[1], job_id, token)
  need_key(keys[4], base .. ':worker:' .. (job.worker_id or ''), 'worker')
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
  local base = need_base(args[1])
  local job_id = need_ident(args[2], 'job_id')
  local reason = args[3] or ''
  need_key(keys[1], base .. ':job:' .. job_id, 'job')
  need_key(keys[2], base .. ':events:' .. job_id, 'events')
  need_key(keys[3], base .. ':leases', 'leases')
  need_key(keys[4], base .. ':delayed', 'delayed')
  need_key(keys[5], base .. ':finished', 'finished')
  if #reason > 8000 then bad('INVALID', 'reason', 'is longer than 8000 characters') end
  local retention = int_arg(args[4], 'retention_s', 1)
  local maxlen = int_arg(args[5], 'events_maxlen', 1)
  local f = redis.call('HMGET', keys[1], 'status', 'service', 'class_id', 'customer_id',
    'workflow_id', 'worker_id', 'score')
  local status, service = f[1], f[2]
  if not status then bad('NOT_FOUND', 'job_id', 'job ' .. job_id .. ' does not exist') end
  if status == 'completed' or status == 'failed' or status == 'cancelled' then
    bad('CONFLICT', 'status', 'job ' .. job_id .. ' is already ' .. status)
  end
  local now = now_ms()
  if status == 'pending' then
    unindex_pending(derived_keys(base, service, f[3]), job_id, f[7], f[4], f[5], service, f[3])
  elseif status == 'retrying' then
    redis.call('ZREM', keys[4], job_id)
  else
    redis.call('ZREM', keys[3], job_id)
    set_idle(base .. ':worker:' .. f[6], now)
    redis.call('SPUBLISH', base .. ':control:' .. f[6],
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
-- run from many processes: each expired lease is removed from the set by exactly one call, and
-- with gate_ms > 0 only the first caller of each gate_ms window sweeps (SET NX PX on the lock
-- key), so N processes running the reaper cost one sweep per interval, not N.
-- A lease that ran out means the worker died or hung, not that the job failed: the attempt is
-- given back and the job's lost_leases counted instead; past max_lost it fails, category 'lost'.
-- Also trims archive-outbox entries older than the retention, so the outbox stays bounded where
-- no projector runs (a queue used without the API).
-- KEYS: leases, delayed, dead, finished, reaper lock.
-- ARGV: base, limit, retention_s, maxlen, max_lost, gate_ms (0: always sweep), owner.
-- Returns {requeued, failed, promoted, swept (1, or 0 when another process swept this window)}.
local function emp_reap(keys, args)
  need_keys(keys, 5)
  local base = need_base(args[1])
  need_key(keys[1], base .. ':leases', 'leases')
  need_key(keys[2], base .. ':delayed', 'delayed')
  need_key(keys[3], base .. ':dead', 'dead')
  need_key(keys[4], base .. ':finished', 'finished')
  need_key(keys[5], base .. ':reaper', 'reaper')
  local limit = int_arg(args[2], 'limit', 1, 100000)
  local retention = int_arg(args[3], 'retention_s', 1)
  local maxlen = int_arg(args[4], 'events_maxlen', 1)
  local max_lost = int_arg(args[5], 'max_lost', 0, 1000)
  local gate_ms = int_arg(args[6], 'gate_ms', 0, 3600000)
  local owner = args[7] or ''
  if #owner > 200 then bad('INVALID', 'owner', 'is longer than 200 characters') end
  if gate_ms > 0 and not redis.call('SET', keys[5], owner, 'NX', 'PX', gate_ms) then
    return {0, 0, 0, 0}
  end
  local leases, delayed, dead, finished = keys[1], keys[2], keys[3], keys[4]
  local now = now_ms()
  redis.call('ZREMRANGEBYSCORE', finished, '-inf', now - retention * 1000)
  local requeued, failed = 0, 0
  for _, job_id in ipairs(redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, limit)) do
    redis.call('ZREM', leases, job_id)
    local jk = base .. ':job:' .. job_id
    local f = redis.call('HMGET', jk, 'status', 'attempts', 'max_attempts', 'worker_id', 'service',
      'class_id', 'score', 'requirements')
    local active = f[1] == 'claimed' or f[1] == 'running'
    if active and not (tonumber(f[2]) and tonumber(f[3]) and f[4] and f[5] and f[6]
        and tonumber(f[7]) and f[8]) then
      quarantine(base, 'job', job_id, 'its lease expired but its record is incomplete', now)
    elseif active then
      set_idle(base .. ':worker:' .. f[4], now)
      local lost = redis.call('HINCRBY', jk, 'lost_leases', 1)
      if lost <= max_lost then
        -- Not the job's failure: the claim's attempt is given back.
        redis.call('HINCRBY', jk, 'attempts', -1)
        requeue(base, job_id, maxlen, 'lease_expired')
        requeued = requeued + 1
      else
        local message = 'lost its worker ' .. lost .. ' times (worker ' .. f[4]
          .. ' stopped renewing its lease); the limit is ' .. max_lost
        redis.call('HSET', jk, 'status', 'failed', 'error', message, 'finished_at', now,
          'token', '', 'lease_deadline', '', 'error_category', 'lost', 'error_pattern_id', '',
          'error_user_message', 'The job stopped the machine running it too many times.')
        redis.call('ZADD', dead, now, job_id)
        to_archive(finished, job_id, now)
        emit(base, job_id, base .. ':events:' .. job_id, maxlen, f[5], {type = 'failed',
          status = 'failed', at = now, attempt = f[2], worker_id = f[4], error = message,
          category = 'lost'})
        redis.call('EXPIRE', base .. ':events:' .. job_id, retention)
        failed = failed + 1
      end
    end
  end
  local promoted = promote_due(base, delayed, now, limit, maxlen)
  return {requeued, failed, promoted, 1}
end

-- A worker stops (shutdown): its slots leave the idle sets, so no job's wake-up goes to a slot
-- that will not claim. With a slot (ARGV[4]), that slot alone leaves them: a slot of a worker
-- serving several queues went idle here, then took another queue's job, and is busy now.
-- KEYS: worker. ARGV: base, capabilities JSON, slots[, slot].
local function emp_rest(keys, args)
  need_keys(keys, 1)
  local base = need_base(args[1])
  local caps = load_caps(args[2])
  local slots = int_arg(args[3], 'slots', 1, 4096)
  local slot = slot_arg(args[4])
  need_key(keys[1], base .. ':worker:' .. caps.worker_id, 'worker')
  local members = {}
  if slot ~= '' then
    members[1] = caps.worker_id .. '#' .. slot
  else
    for i = 0, slots - 1 do members[#members + 1] = caps.worker_id .. '#' .. i end
  end
  for _, service in ipairs(caps.services) do
    redis.call('ZREM', idle_key(base, service, caps.profiles[service].id), unpack(members))
  end
  return 1
end

---------------------------------------------------------------------------------------------------
-- operator actions (issue 17): each call does bounded work, so a bulk action is many short calls

local OPERATOR_BATCH = 500

-- Retry failed (dead-lettered) jobs: a fresh attempt budget, optionally a new priority; pending
-- again at once. Jobs not in status failed are skipped (returned), so a batch is never refused for
-- one job that changed meanwhile. KEYS: dead. ARGV: base, events_maxlen, priority ('' keeps it),
-- reason, then up to OPERATOR_BATCH job ids. Returns {retried, {skipped ids}}.
local function emp_retry(keys, args)
  need_keys(keys, 1)
  local base = need_base(args[1])
  need_key(keys[1], base .. ':dead', 'dead')
  local maxlen = int_arg(args[2], 'events_maxlen', 1)
  local priority = nil
  if args[3] ~= nil and args[3] ~= '' then priority = int_arg(args[3], 'priority', 0, PRIORITY_MAX) end
  local reason = args[4] or ''
  if #reason > 8000 then bad('INVALID', 'reason', 'is longer than 8000 characters') end
  if #args - 4 > OPERATOR_BATCH then
    bad('INVALID', 'job_ids', 'at most ' .. OPERATOR_BATCH .. ' jobs per call')
  end
  for i = 5, #args do need_ident(args[i], 'job_ids.' .. (i - 5)) end
  local retried, skipped = 0, {}
  for i = 5, #args do
    local job_id = args[i]
    local jk = base .. ':job:' .. job_id
    local f = redis.call('HMGET', jk, 'status', 'service', 'class_id', 'score', 'requirements')
    if f[1] ~= 'failed' or not f[2] or not f[3] or not tonumber(f[4]) or not f[5] then
      skipped[#skipped + 1] = job_id
    else
      local extra = {'attempts', 0, 'lost_leases', 0, 'finished_at', '', 'retry_at', '',
        'avoid_worker', '', 'avoid_until', '', 'error', '', 'error_category', '',
        'error_pattern_id', '', 'error_user_message', '', 'progress', 0, 'message', ''}
      if priority ~= nil then
        local order = tonumber(f[4]) % SEQ_SPAN
        extra[#extra + 1] = 'priority'
        extra[#extra + 1] = priority
        extra[#extra + 1] = 'score'
        extra[#extra + 1] = fmt_int((PRIORITY_MAX - priority) * SEQ_SPAN + order)
      end
      redis.call('HSET', jk, unpack(extra))
      redis.call('ZREM', keys[1], job_id)
      redis.call('PERSIST', jk)
      redis.call('PERSIST', base .. ':events:' .. job_id)
      requeue(base, job_id, maxlen, reason ~= '' and reason or 'operator_retry')
      retried = retried + 1
    end
  end
  return {retried, skipped}
end

-- Requeue a stuck job: a claimed or running job goes back to pending with its attempt given back
-- and its worker told to drop it (the token is cleared, so its reports are refused as stale); a
-- retrying job is made due now. KEYS: job, leases, delayed. ARGV: base, job_id, reason, maxlen.
-- Returns the status the job had.
local function emp_requeue(keys, args)
  need_keys(keys, 3)
  local base = need_base(args[1])
  local job_id = need_ident(args[2], 'job_id')
  local reason = args[3] or ''
  if #reason > 8000 then bad('INVALID', 'reason', 'is longer than 8000 characters') end
  local maxlen = int_arg(args[4], 'events_maxlen', 1)
  need_key(keys[1], base .. ':job:' .. job_id, 'job')
  need_key(keys[2], base .. ':leases', 'leases')
  need_key(keys[3], base .. ':delayed', 'delayed')
  local f = redis.call('HMGET', keys[1], 'status', 'worker_id', 'service', 'class_id', 'score',
    'requirements')
  local status = f[1]
  if not status then bad('NOT_FOUND', 'job_id', 'job ' .. job_id .. ' does not exist') end
  if status ~= 'claimed' and status ~= 'running' and status ~= 'retrying' then
    bad('CONFLICT', 'status', 'job ' .. job_id .. ' is ' .. status
      .. '; only a claimed, running or retrying job can be requeued')
  end
  if not (f[3] and f[4] and tonumber(f[5]) and f[6]) then
    bad('CONFLICT', 'job_id', 'job ' .. job_id .. ' has an incomplete record')
  end
  local now = now_ms()
  if status == 'retrying' then
    redis.call('ZREM', keys[3], job_id)
  else
    redis.call('ZREM', keys[2], job_id)
    if f[2] and f[2] ~= '' then
      set_idle(base .. ':worker:' .. f[2], now)
      redis.call('SPUBLISH', base .. ':control:' .. f[2],
        cjson.encode({type = 'cancel', job_id = job_id, reason = 'requeued by an operator'}))
    end
    redis.call('HINCRBY', keys[1], 'attempts', -1)
  end
  requeue(base, job_id, maxlen, reason ~= '' and reason or 'operator_requeue',
    {'retry_at', '', 'avoid_worker', '', 'avoid_until', ''})
  return status
end

redis.register_function('emp_version', function() return VERSION end)
redis.register_function('emp_rest', emp_rest)
redis.register_function('emp_submit', emp_submit)
redis.register_function('emp_claim', emp_claim)
redis.register_function('emp_heartbeat', emp_heartbeat)
redis.register_function('emp_progress', emp_progress)
redis.register_function('emp_complete', emp_complete)
redis.register_function('emp_fail', emp_fail)
redis.register_function('emp_release', emp_release)
redis.register_function('emp_cancel', emp_cancel)
redis.register_function('emp_reap', emp_reap)
redis.register_function('emp_retry', emp_retry)
redis.register_function('emp_requeue', emp_requeue)
