-- wrk script: like wrk.lua, but each connection sends $BENCH_PIPELINE requests
-- (default 8) in one write and then reads their answers (HTTP/1.1 pipelining).
-- Counts and the JSON summary in $BENCH_OUT are per answer.
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
local body = f:read("*a")
f:close()
local depth = tonumber(os.getenv("BENCH_PIPELINE") or "8")

init = function(args)
  local reqs = {}
  for i = 1, depth do
    reqs[i] = wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
  end
  batch = table.concat(reqs)
end

request = function()
  return batch
end

done = function(summary, latency, requests)
  local out = assert(io.open(os.getenv("BENCH_OUT"), "w"))
  local e = summary.errors
  out:write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"err_status":%d,"err_connect":%d,' ..
    '"err_read":%d,"err_write":%d,"err_timeout":%d,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read,
    e.write, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max))
  out:close()
end
