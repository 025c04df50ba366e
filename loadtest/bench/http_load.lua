-- wrk script for `tandtid bench http`: each thread replays its share of a file of prepared
-- requests (one line each: method, path, bearer token, JSON body, separated by tabs), counts
-- statuses, and the run ends with one JSON line of figures on stdout.
-- Arguments (after `--`): the requests file, the number of wrk threads.

local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local nthreads = tonumber(args[2])
  reqs = {}
  local i = 0
  for line in io.lines(args[1]) do
    if i % nthreads == id then
      local method, path, token, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      local headers = { ["Content-Type"] = "application/json" }
      if token ~= "" then headers["Authorization"] = "Bearer " .. token end
      reqs[#reqs + 1] = wrk.format(method, path, headers, body)
    end
    i = i + 1
  end
  n = 0
  statuses = {}
  wrapped = 0
end

function request()
  n = n + 1
  if n > #reqs then
    n = 1
    wrapped = wrapped + 1
  end
  return reqs[n]
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local agg = {}
  local wraps = 0
  for _, t in ipairs(threads) do
    for code, count in pairs(t:get("statuses")) do
      agg[code] = (agg[code] or 0) + count
    end
    wraps = wraps + t:get("wrapped")
  end
  local parts = {}
  for code, count in pairs(agg) do
    parts[#parts + 1] = string.format('"%d": %d', code, count)
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"socket_errors": %d, "wrapped": %d, "statuses": {%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect + e.read + e.write + e.timeout, wraps, table.concat(parts, ", ")))
end
