-- wrk script: POST the same rank request (5 candidate routes of 4 hops) over and over.
-- The body file is written by `p2psip sos bench-fixtures` (rank.json).
local f = assert(io.open(os.getenv("SOS_BENCH_RANK"), "r"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
