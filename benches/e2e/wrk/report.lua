-- Appended to every wrk script the harness runs (see harness/wrk.py).
--
-- Prints one machine-readable line with wrk's own counters, so the harness
-- reads exact integers (latency in microseconds) instead of the rounded
-- human units of `wrk --latency`. Defining only done() keeps wrk on its
-- fast path: no Lua runs per request.

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d,"
      .. "\"errors\":{\"connect\":%d,\"read\":%d,\"write\":%d,\"status\":%d,\"timeout\":%d},"
      .. "\"latency_us\":{\"p50\":%d,\"p90\":%d,\"p99\":%d,\"max\":%d,\"mean\":%.1f}}\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
