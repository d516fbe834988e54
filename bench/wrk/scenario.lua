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

-- A body holding __USER__ gets a user id never sent before on every request (a launch: every
-- request is a new player). BENCH_RUN keeps ids of different runs apart.
local run = os.getenv("BENCH_RUN") or "run"
local next_thread = 0
function setup(thread)
  next_thread = next_thread + 1
  thread:set("thread_id", next_thread)
end

if body and body:find("__USER__", 1, true) then
  local sent = 0
  function request()
    sent = sent + 1
    local user = run .. "-" .. tostring(thread_id) .. "-" .. tostring(sent)
    return wrk.format(nil, nil, nil, (body:gsub("__USER__", user)))
  end
end

-- No response() hook: it would run Lua per reply and slow wrk itself; run.py checks one reply
-- before each run instead.
done = report.done
