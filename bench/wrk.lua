-- wrk script: POST the body in $BENCH_BODY (JSON, or binary: below); write a JSON summary to $BENCH_OUT.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
-- A body in the binary tensor extension: $BENCH_HEADER_LEN is its JSON head's length.
if os.getenv("BENCH_HEADER_LEN") then
  wrk.headers["Content-Type"] = "application/octet-stream"
  wrk.headers["Inference-Header-Content-Length"] = os.getenv("BENCH_HEADER_LEN")
end
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.body = f:read("*a")
f:close()

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
