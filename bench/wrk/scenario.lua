-- One request shape per run, chosen by the environment (see bench/run.sh):
--   BENCH_PATH, BENCH_BODY_FILE, BENCH_KEY.
package.path = package.path .. ";" .. (os.getenv("BENCH_DIR") or ".") .. "/?.lua"
local report = require("report")

local path = os.getenv("BENCH_PATH") or "/graphql"
local body_file = os.getenv("BENCH_BODY_FILE")
local body = nil
if body_file and body_file ~= "" then
  local file = assert(io.open(body_file, "rb"))
  body = file:read("*a")
  file:close()
end

wrk.method = body and "POST" or "GET"
wrk.path = path
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "defaulthttpkey")

-- No response() hook: it would run Lua per reply and slow wrk itself; run.sh checks one reply
-- before each run instead.
done = report.done
