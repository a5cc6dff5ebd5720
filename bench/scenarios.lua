-- wrk scenarios for todo-server. Usage:
--   wrk -t1 -cN -dS -s bench/scenarios.lua URL -- <scenario> <data.lua>
-- data.lua returns {tokens = {...}, tasks = {...}}: one token and one task id per user.
-- Requests rotate through the users; done() prints one JSON line for the harness.

local scenario, data
local n = 0

function init(args)
  scenario = args[1]
  data = dofile(args[2])
end

local function auth(k)
  return {["Authorization"] = "Bearer " .. data.tokens[k], ["Content-Type"] = "application/json"}
end

local builders = {
  list = function(k) return wrk.format("GET", "/api/tasks?limit=50", auth(k)) end,
  -- A polling frontend: the same list with the ETag it holds; 304 while nothing changed.
  poll = function(k)
    local headers = auth(k)
    headers["If-None-Match"] = data.etags[k]
    return wrk.format("GET", "/api/tasks?limit=50", headers)
  end,
  -- The floor endpoint (bench/floor_app.py) answers the same list request.
  floor = function(k) return wrk.format("GET", "/api/tasks?limit=50", auth(k)) end,
  -- So does the seed stack (bench/seed_app.py, FastAPI + SQLModel + psycopg2).
  seed = function(k) return wrk.format("GET", "/api/tasks?limit=50", auth(k)) end,
  get = function(k) return wrk.format("GET", "/api/tasks/" .. data.tasks[k], auth(k)) end,
  create = function(k)
    return wrk.format("POST", "/api/tasks", auth(k), '{"title":"bench task","tags":["bench"]}')
  end,
  update = function(k)
    return wrk.format("PATCH", "/api/tasks/" .. data.tasks[k], auth(k), '{"title":"renamed by bench"}')
  end,
  complete = function(k)
    return wrk.format("PATCH", "/api/tasks/" .. data.tasks[k] .. "/complete", auth(k))
  end,
  bare = function(k) return wrk.format("GET", "/", auth(k)) end,
}

-- 70% reads (list and get), 30% writes (create, update, complete).
local mix = {"list", "list", "list", "list", "get", "get", "get", "create", "update", "complete"}

function request()
  n = n + 1
  local k = (n % #data.tokens) + 1
  local name = scenario
  if scenario == "mix" then name = mix[(n % #mix) + 1] end
  return builders[name](k)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
