-- wrk script: stream pre-signed evidence reports (reports.jsonl from
-- `p2psip sos bench-fixtures`), each with its own nonce. Threads take disjoint lines; with
-- several wrk processes (one per SOS instance), SOS_BENCH_PART of SOS_BENCH_PARTS picks
-- this process's disjoint share.
local counter = 0
local threads = {}

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local n = tonumber(os.getenv("SOS_BENCH_INGEST_THREADS") or "1")
  local parts = tonumber(os.getenv("SOS_BENCH_PARTS") or "1")
  local part = tonumber(os.getenv("SOS_BENCH_PART") or "0")
  bodies = {}
  local i = 0
  for line in io.lines(os.getenv("SOS_BENCH_REPORTS")) do
    if i % (n * parts) == part * n + tid then bodies[#bodies + 1] = line end
    i = i + 1
  end
  idx = 0
  -- Pace each connection so the whole run offers SOS_BENCH_INGEST_RATE reports/s
  -- (0 = as fast as the server answers).
  local rate = tonumber(os.getenv("SOS_BENCH_INGEST_RATE") or "0")
  local conns = tonumber(os.getenv("SOS_BENCH_INGEST_CONNS") or "1")
  pause_ms = 0
  if rate > 0 then pause_ms = math.floor(1000 * conns / rate) end
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

-- No response() hook: parsing answers in Lua would steal CPU from the server on a small
-- machine. bench-sos reads accepted/refused counts from the server's /metrics instead.
