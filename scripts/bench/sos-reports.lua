-- wrk script: stream pre-signed evidence reports (reports.jsonl from
-- `p2psip sos bench-fixtures`), each with its own nonce. Threads take disjoint lines.
local counter = 0
local threads = {}

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local n = tonumber(os.getenv("SOS_BENCH_INGEST_THREADS") or "1")
  bodies = {}
  local i = 0
  for line in io.lines(os.getenv("SOS_BENCH_REPORTS")) do
    if i % n == tid then bodies[#bodies + 1] = line end
    i = i + 1
  end
  idx = 0
  -- Pace each connection so the whole run offers SOS_BENCH_INGEST_RATE reports/s
  -- (0 = as fast as the server answers).
  local rate = tonumber(os.getenv("SOS_BENCH_INGEST_RATE") or "0")
  local conns = tonumber(os.getenv("SOS_BENCH_INGEST_CONNS") or "1")
  pause_ms = 0
  if rate > 0 then pause_ms = math.floor(1000 * conns / rate) end
  accepted = 0
  refused = 0
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  idx = idx + 1
  if idx > #bodies then idx = 1 end -- wrapping replays old nonces: those are refused (409)
  return wrk.format("POST", "/v1/reports", nil, bodies[idx])
end

function delay()
  return pause_ms
end

function response(status, headers, body)
  if status == 200 then accepted = accepted + 1 else refused = refused + 1 end
end

function done(summary, latency, requests)
  local a, r = 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("accepted")
    r = r + t:get("refused")
  end
  io.write(string.format("ingest: accepted %d, refused %d, %.0f reports/s accepted\n",
    a, r, a / (summary.duration / 1e6)))
end
